"""Differential privacy with Opacus: user-level DP-FedAvg accounting and client DP-SGD.

Opacus is imported only when one of these names is first used (PEP 562), so that config
parsing and ``import flwr_privshare`` stay light, and then without the root log handler that
Opacus's import adds (:mod:`.opacus_logging`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .opacus_logging import quiet_import
from .section import ACCOUNTANTS, CLIPPING_MODES, SAMPLING_MODES, DPSection

if TYPE_CHECKING:
    from .accounting import (
        SAMPLING_ASSUMPTIONS,
        UserLevelAccountant,
        adaptive_round_noise_multiplier,
        epsilon_rdp,
        noise_multiplier_for_target,
        validate_dp_parameters,
    )
    from .dpsgd import DPSGDResult, history_from_record, history_to_record, make_private_compatible, train_dp_sgd

_LAZY = {
    "SAMPLING_ASSUMPTIONS": ".accounting",
    "UserLevelAccountant": ".accounting",
    "adaptive_round_noise_multiplier": ".accounting",
    "epsilon_rdp": ".accounting",
    "noise_multiplier_for_target": ".accounting",
    "validate_dp_parameters": ".accounting",
    "DPSGDResult": ".dpsgd",
    "history_from_record": ".dpsgd",
    "history_to_record": ".dpsgd",
    "make_private_compatible": ".dpsgd",
    "train_dp_sgd": ".dpsgd",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(quiet_import(_LAZY[name], __name__), name)


__all__ = [
    "ACCOUNTANTS",
    "CLIPPING_MODES",
    "SAMPLING_ASSUMPTIONS",
    "SAMPLING_MODES",
    "DPSGDResult",
    "DPSection",
    "UserLevelAccountant",
    "adaptive_round_noise_multiplier",
    "epsilon_rdp",
    "history_from_record",
    "history_to_record",
    "make_private_compatible",
    "noise_multiplier_for_target",
    "train_dp_sgd",
    "validate_dp_parameters",
]
