"""Differential privacy: Opacus accounting for user-level DP-FedAvg (and, next, client DP-SGD)."""

from .accounting import (
    UserLevelAccountant,
    epsilon_rdp,
    noise_multiplier_for_target,
    validate_dp_parameters,
)

__all__ = ["UserLevelAccountant", "epsilon_rdp", "noise_multiplier_for_target", "validate_dp_parameters"]
