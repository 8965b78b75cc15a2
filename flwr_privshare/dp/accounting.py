"""Privacy accounting with Opacus's RDP accountant.

User-level DP-FedAvg (McMahan et al., 2018, https://arxiv.org/abs/1710.06963) releases one
Gaussian-noised average of clipped client updates per round: a subsampled Gaussian mechanism
with sample rate ``q = m / N`` (``m`` of ``N`` clients per round) and one step, composed over
the rounds by Opacus's RDP accountant (Mironov et al., 2019, https://arxiv.org/abs/1908.10530).
The sampling decides whether that epsilon is exact (:data:`SAMPLING_ASSUMPTIONS`):

- ``"poisson"``: every client joins a round independently with probability ``q``, and the
  noisy sum is divided by the expected count ``m`` (the paper's fixed-denominator estimator),
  so a round's noise and sensitivity do not depend on who replied. This is the sampling RDP
  amplification is proven for: the epsilon is exact. Every round is accounted at ``z``, also
  one in which nobody was sampled or replied (it still releases noise).
- ``"fixed"``: Flower's own sampling of exactly ``m`` clients *without replacement*; the
  amplified epsilon is then an approximation and the no-amplification epsilon (``q = 1``),
  reported beside it, the valid upper bound. A round in which only ``k < m`` sampled clients
  reply averages over ``k`` with noise calibrated for ``m``: its sensitivity is ``C / k``, so
  it is accounted with the effective noise multiplier ``z * k / m``.

Adaptive clipping (Andrew et al., 2021, https://arxiv.org/abs/1905.03871) as Flower 1.41
implements it releases two things per round, and :func:`adaptive_round_noise_multiplier`
accounts both as one Gaussian mechanism on the joint query:

- the average of updates clipped to ``C_t`` with noise std ``z_u * C_{t+1} / m``: Flower
  updates the norm before it adds the noise, so the update's own multiplier is
  ``z_u * C_{t+1} / C_t`` (times ``k / m`` as above);
- the count of clipped clients, each contributing 0 or 1 (not centred to +-1/2 as in the
  paper), with noise std ``sigma_b``: multiplier ``sigma_b``.

Together: ``z_round = (z_update^-2 + sigma_b^-2)^(-1/2)``. This is smaller than the ``z``
Flower's wrapper is configured with, which assumes a centred count and the old norm.
"""

from __future__ import annotations

import math

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from .opacus_logging import drop_opacus_root_handler
from .section import SAMPLING_MODES, DPSection

drop_opacus_root_handler()

SAMPLING_ASSUMPTIONS = {
    "poisson": (
        "Poisson sampling: each of N clients joins a round independently with probability q = m/N and the noisy "
        "sum is divided by m; epsilon is Opacus RDP for Poisson sampling at q, one step per round (exact)."
    ),
    "fixed": (
        "Flower samples a fixed number m of N clients without replacement each round; epsilon "
        "uses Opacus RDP for Poisson sampling at q = m/N, one step per round (an approximation). "
        "epsilon_no_amplification (q = 1) is a valid upper bound."
    ),
}


def validate_dp_parameters(
    *, noise_multiplier: float, clipping_norm: float, delta: float, num_sampled: int, num_total: int
) -> None:
    """Raise ``ValueError`` naming the first bad value (the DP section holds the rules of the first three)."""
    DPSection(noise_multiplier=noise_multiplier, clipping_norm=clipping_norm, delta=delta)
    if num_total < 1 or not 1 <= num_sampled <= num_total:
        raise ValueError(
            f"sampled clients per round must be between 1 and the number of clients ({num_total}), got {num_sampled}"
        )


def epsilon_rdp(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon(delta) of a composition ``[(noise_multiplier, sample_rate, steps), ...]`` (Opacus RDP)."""
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


def noise_multiplier_for_target(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier that keeps ``steps`` rounds within ``target_epsilon`` (Opacus RDP).

    Raises:
        ValueError: when the target cannot be reached.
    """
    if not 0 < target_epsilon < math.inf:
        raise ValueError(f"target-epsilon must be a positive finite number, got {target_epsilon}")
    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
            )
        )
    except ValueError as error:
        raise ValueError(
            f"target-epsilon {target_epsilon} cannot be reached at delta {delta}, sample rate {sample_rate} "
            f"and {steps} rounds ({error})"
        ) from error


class UserLevelAccountant:
    """Epsilon of user-level DP-FedAvg after every round (see the module docstring).

    Args:
        noise_multiplier: ``z``; the noise std on the sum of clipped updates is ``z * C``.
        num_sampled: clients sampled per round, ``m``.
        num_total: clients in the federation, ``N``.
        delta: the target delta.
        sampling: ``"poisson"`` or ``"fixed"`` (see the module docstring).
    """

    def __init__(
        self, noise_multiplier: float, num_sampled: int, num_total: int, delta: float, sampling: str = "poisson"
    ) -> None:
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        self.noise_multiplier = noise_multiplier
        self.sampling = sampling
        self.num_sampled = num_sampled
        self.sample_rate = num_sampled / num_total
        self.delta = delta
        self.history: list[tuple[float, float, int]] = []

    def step(self, num_replies: int, noise_multiplier: float | None = None) -> None:
        """Account one released round that summed ``num_replies`` clipped updates.

        With Poisson sampling every round costs ``z``; with fixed sampling a round of
        ``k < m`` replies costs ``z * k / m``. ``noise_multiplier`` overrides the effective
        multiplier of the round (adaptive clipping computes it with
        :func:`adaptive_round_noise_multiplier`).
        """
        if noise_multiplier is not None:
            effective = noise_multiplier
        elif self.sampling == "poisson":
            effective = self.noise_multiplier
        else:
            effective = self.noise_multiplier * min(num_replies, self.num_sampled) / self.num_sampled
        if self.history and self.history[-1][0] == effective:
            z, q, steps = self.history[-1]
            self.history[-1] = (z, q, steps + 1)
        else:
            self.history.append((effective, self.sample_rate, 1))

    @property
    def rounds(self) -> int:
        """Released rounds so far."""
        return sum(steps for _, _, steps in self.history)

    def epsilon(self) -> float:
        """Epsilon with amplification by client sampling (exact for Poisson sampling, see the module docstring)."""
        return epsilon_rdp(self.history, self.delta)

    def epsilon_no_amplification(self) -> float:
        """Epsilon without amplification (every client in every round): an upper bound."""
        return epsilon_rdp([(z, 1.0, steps) for z, _, steps in self.history], self.delta)


def adaptive_round_noise_multiplier(
    update_noise_multiplier: float,
    clipping_norm_before: float,
    clipping_norm_after: float,
    num_replies: int,
    num_sampled: int,
    clipped_count_stddev: float,
) -> float:
    """The effective noise multiplier of one adaptive-clipping round (see the module docstring)."""
    update = update_noise_multiplier * (clipping_norm_after / clipping_norm_before)
    update *= min(num_replies, num_sampled) / num_sampled
    return float((update**-2 + clipped_count_stddev**-2) ** -0.5)
