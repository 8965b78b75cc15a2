"""The client side of the test-only extension app."""

from .experiment import EXPERIMENT

app = EXPERIMENT.client_app()
