"""The DP section: the run-config keys of DP-SGD (Opacus, per example) and DP-FedAvg (per user)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.checks import NON_NEGATIVE, POSITIVE, Interval, one_of, require
from ..config.section import Section, setting

ACCOUNTANTS = ("rdp", "prv")
CLIPPING_MODES = ("server", "client", "server-adaptive", "client-adaptive")
#: DP-FedAvg's client sampling: Poisson (the accountant's own assumption) or Flower's fixed-size sample.
SAMPLING_MODES = ("poisson", "fixed")


@dataclass(frozen=True)
class DPSection(Section):
    """Differential privacy: DP-SGD on every client (``dp-sgd``) or user-level DP-FedAvg (``dp-fedavg``)."""

    title = "Differential privacy"

    noise_multiplier: float = setting(1.0, "noise multiplier z (DP-SGD: per batch; DP-FedAvg: per round)", POSITIVE)
    max_grad_norm: float = setting(1.0, "DP-SGD per-example gradient clipping norm", POSITIVE)
    clipping_norm: float = setting(
        0.5, "DP-FedAvg client-update clipping norm (the initial one when adaptive)", POSITIVE
    )
    delta: float = setting(
        1e-5, "the delta of every reported epsilon", Interval("a number in (0, 1)", 0, 1, True, True)
    )
    target_epsilon: float = setting(
        0.0,
        "when positive, the noise multiplier that keeps the whole run within this epsilon (0: use noise-multiplier)",
        NON_NEGATIVE,
    )
    augmentation_multiplicity: int = setting(
        1,
        "DP-SGD: augmented copies of every sampled example, gradients averaged before clipping (De et al. 2022)",
        Interval("an integer in [1, 64]", 1, 64),
    )
    dp_accountant: str = setting("rdp", "DP-SGD accountant (DP-FedAvg always uses RDP)", one_of(ACCOUNTANTS))
    dp_clipping: str = setting(
        "server",
        "DP-FedAvg clipping on the server or the client, fixed or adaptive (Andrew et al. 2021)",
        one_of(CLIPPING_MODES),
    )
    dp_sampling: str = setting(
        "poisson",
        "DP-FedAvg client sampling: 'poisson' (each client joins with probability m/N, m = FedAvg's sample size at "
        "fraction-train; epsilon exact) or "
        "'fixed' (Flower's fixed-size sample; epsilon approximate, needed by adaptive clipping)",
        one_of(SAMPLING_MODES),
    )
    dp_clipped_count_stddev: float = setting(
        0.0,
        "adaptive clipping's noise std on the clipped-client count (0: Flower's default, sampled clients / 20)",
        NON_NEGATIVE,
    )

    def validate(self) -> None:
        require(
            not (self.target_epsilon > 0 and self.dp_clipping.endswith("adaptive")),
            "target-epsilon",
            self.target_epsilon,
            f"0 with dp-clipping {self.dp_clipping!r} (with adaptive clipping epsilon is only known after the run)",
        )
        require(
            not (self.dp_sampling == "poisson" and self.dp_clipping.endswith("adaptive")),
            "dp-sampling",
            self.dp_sampling,
            f"'fixed' with dp-clipping {self.dp_clipping!r} (Flower's adaptive clipping averages a fixed-size sample)",
        )
