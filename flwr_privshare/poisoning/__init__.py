"""Deep Poisoning Modules (Guo et al., "Deep Poisoning: Towards Robust Image Data Sharing against
Visual Disclosure", arXiv 1912.06895): split a classifier, train reconstructors, poison features."""

from .dpm import DPM_BLOCKS, DeepPoisoningModule, DPMTrainingResult, poisoned_features, ssim_per_image, train_dpm
from .evaluation import evaluate_poisoning, reference_ssim
from .reconstructor import (
    CHECK_RECONSTRUCTORS,
    ENSEMBLE_RECONSTRUCTORS,
    RECONSTRUCTORS,
    Reconstructor,
    train_reconstructor,
)
from .refine import decider_accuracy, train_decider
from .self_check import CheckedDPM, SelfCheck, check_ssim, train_checked_dpm
from .split import SplitModel, feature_shape, split_model

__all__ = [
    "CHECK_RECONSTRUCTORS",
    "DPM_BLOCKS",
    "ENSEMBLE_RECONSTRUCTORS",
    "RECONSTRUCTORS",
    "CheckedDPM",
    "DPMTrainingResult",
    "DeepPoisoningModule",
    "Reconstructor",
    "SelfCheck",
    "SplitModel",
    "check_ssim",
    "decider_accuracy",
    "evaluate_poisoning",
    "feature_shape",
    "poisoned_features",
    "reference_ssim",
    "split_model",
    "ssim_per_image",
    "train_checked_dpm",
    "train_decider",
    "train_dpm",
    "train_reconstructor",
]
