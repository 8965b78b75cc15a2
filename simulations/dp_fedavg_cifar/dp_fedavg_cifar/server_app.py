"""ServerApp: the experiment skeleton of flwr-privshare with this app's sections."""

from .experiment import EXPERIMENT

app = EXPERIMENT.server_app()
