"""Learning-rate schedules over the whole federated run, not over one client's round.

A client trains ``local_epochs`` epochs of ``steps_per_epoch`` steps in each of the run's
``num_server_rounds`` rounds; its step ``s`` of round ``r`` is the run's step
``((r - 1) * local_epochs * steps_per_epoch) + s``, and the schedule is a function of that
step over all ``num_server_rounds * local_epochs * steps_per_epoch`` of them. So FedAvg clients
anneal together over the run, as one model trained centrally would (Li et al. 2020 show that
FedAvg needs a decaying step size to converge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "cosine", "one-cycle")
#: OneCycleLR's defaults: the warm-up starts at lr / 25 and the run ends at lr / (25 * 1e4).
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL_DIV = 1e4


@dataclass(frozen=True)
class LearningRateSchedule:
    """A learning-rate factor for every step of the run.

    Attributes:
        name: ``"constant"``; ``"cosine"`` (Loshchilov & Hutter 2017, to 0 at the end of the
            run); or ``"one-cycle"`` (Smith & Topin 2019, as PyTorch's ``OneCycleLR`` with its
            defaults: a cosine warm-up from lr/25 over ``warmup`` of the run, then a cosine
            decay to lr/2.5e5).
        warmup: the fraction of the run spent warming up (one-cycle only).
    """

    name: str = "constant"
    warmup: float = 0.25

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {self.name!r}")
        if not 0.0 < self.warmup < 1.0:
            raise ValueError(f"warmup must lie in (0, 1), got {self.warmup!r}")

    def factor(self, step: int, total_steps: int) -> float:
        """The learning rate of run step ``step`` (0-based) of ``total_steps``, as a fraction of the peak."""
        if self.name == "constant":
            return 1.0
        if self.name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        start, end = 1.0 / ONE_CYCLE_DIV, 1.0 / (ONE_CYCLE_DIV * ONE_CYCLE_FINAL_DIV)
        warm_steps = float(self.warmup * total_steps) - 1.0
        if warm_steps > 0 and step <= warm_steps:
            return _cosine_between(start, 1.0, step / warm_steps)
        return _cosine_between(1.0, end, min(1.0, (step - warm_steps) / (total_steps - 1 - warm_steps)))

    def scheduler(self, optimizer: torch.optim.Optimizer, first_step: int, total_steps: int) -> LambdaLR:
        """A ``LambdaLR`` on ``optimizer`` that starts at run step ``first_step``; step it after each optimizer step."""
        return LambdaLR(optimizer, lambda local_step: self.factor(first_step + local_step, total_steps))


def _cosine_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1.0)
