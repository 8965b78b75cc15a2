"""The server side of the test-only extension app."""

from .experiment import EXPERIMENT

app = EXPERIMENT.server_app()
