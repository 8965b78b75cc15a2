"""The client side of the test-only faulty app."""

from .experiment import EXPERIMENT

app = EXPERIMENT.client_app()
