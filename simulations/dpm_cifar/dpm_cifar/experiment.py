"""The app's experiment: DPM feature sharing with the settings the DPM study chose, then the audit."""

from flwr_privshare.apps import DPMExperiment

EXPERIMENT = DPMExperiment(
    defaults={
        "num-server-rounds": 3,
        "dpm-lambda": 5.0,
        "dpm-feature-noise": 0.3,
        "dpm-warmup-epochs": 2,
        "dpm-check-reconstructor": "rx3s2",
        "dpm-check-threshold": 0.1,
    }
)
