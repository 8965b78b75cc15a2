"""The server side of the test-only faulty app."""

from .experiment import EXPERIMENT

app = EXPERIMENT.server_app()
