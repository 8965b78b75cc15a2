"""The three simulations' experiments, loaded from their app folders, for tests that call their handlers."""

from __future__ import annotations

from pathlib import Path

from flwr_privshare.apps import DPMExperiment, Experiment, FedAvgExperiment
from flwr_privshare.apps.loading import load_experiment

SIMULATIONS = Path(__file__).resolve().parents[1] / "simulations"


def experiment(app: str) -> Experiment:
    loaded = load_experiment(SIMULATIONS / app)
    assert loaded is not None, f"{app} is not built on the experiment skeleton"
    return loaded


VISUALMIXER = experiment("visualmixer_cifar")
DP = experiment("dp_fedavg_cifar")
DPM = experiment("dpm_cifar")
assert isinstance(VISUALMIXER, FedAvgExperiment) and isinstance(DP, FedAvgExperiment) and isinstance(DPM, DPMExperiment)
# The DPM section's library defaults (not the DPM app's), for procedure tests.
DPM_LIBRARY_DEFAULTS = DPMExperiment()
