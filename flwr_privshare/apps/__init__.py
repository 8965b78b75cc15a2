"""The apps layer: one experiment skeleton (:mod:`.experiment`) and the experiments built on it."""

from .dpm import DPMExperiment
from .experiment import Experiment, Plan, central_evaluation
from .fedavg import FedAvgExperiment

__all__ = ["DPMExperiment", "Experiment", "FedAvgExperiment", "Plan", "central_evaluation"]
