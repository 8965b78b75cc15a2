"""Differential privacy with Opacus: user-level DP-FedAvg accounting and client DP-SGD."""

from .accounting import (
    UserLevelAccountant,
    epsilon_rdp,
    noise_multiplier_for_target,
    validate_dp_parameters,
)
from .dpsgd import DPSGDResult, history_from_record, history_to_record, make_private_compatible, train_dp_sgd

__all__ = [
    "DPSGDResult",
    "UserLevelAccountant",
    "epsilon_rdp",
    "history_from_record",
    "history_to_record",
    "make_private_compatible",
    "noise_multiplier_for_target",
    "train_dp_sgd",
    "validate_dp_parameters",
]
