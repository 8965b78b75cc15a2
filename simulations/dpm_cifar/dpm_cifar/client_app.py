"""ClientApp: the experiment's train handler (and every registered protection's client mods)."""

from .experiment import EXPERIMENT

app = EXPERIMENT.client_app()
