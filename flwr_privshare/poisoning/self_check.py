"""A client's self-check of its DPM before it shares anything.

A DPM trained against one straw man psi fools psi, but whether it also fools reconstructors
it has not seen depends on its draw (initialisation and batch order): over eight clients'
DPMs at the app's settings, one leaves rx4s2 at SSIM 0.46 while psi reads 0.004, and a fresh
draw on the same data leaks no more than the others, 0.13 (experiments/dpm_transfer). The client cannot see this with
psi, so it checks P with a second reconstructor from :data:`CHECK_RECONSTRUCTORS`, outside
the audited family, trained on public data like psi. If ``|SSIM(checker(P(phi1 x)), x)|`` on
its own images exceeds the threshold, it discards P and trains a fresh one; if no draw
passes, it shares nothing. The check runs on the client's images and nothing of it but two
numbers (the SSIM and the number of draws) leaves the client.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data import ImageDataset
from ..train import batches
from .dpm import DeepPoisoningModule, DPMTrainingResult, ssim_per_image
from .reconstructor import CHECK_RECONSTRUCTORS, Reconstructor
from .split import SplitModel

CHECK_IMAGES = 500


@dataclass(frozen=True)
class SelfCheck:
    """How a client checks its DPM: the ``checker`` reconstructor, the largest |SSIM| it
    accepts, and how many DPMs it draws before it gives up for the round.

    Raises:
        ValueError: ``checker`` is not a :data:`CHECK_RECONSTRUCTORS` architecture,
            ``threshold`` is not in (0, 1] or ``draws`` is not positive.
    """

    checker: Reconstructor
    threshold: float
    draws: int

    def __post_init__(self) -> None:
        if self.checker.name not in CHECK_RECONSTRUCTORS:
            raise ValueError(f"the checker must be one of {CHECK_RECONSTRUCTORS}, got {self.checker.name!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")


@dataclass(frozen=True)
class CheckedDPM:
    """The DPM a client ends a round with and what its self-check found.

    ``passed`` is False when no draw passed: ``dpm`` is then the last draw, which the client
    keeps training but whose features it must not share. ``check_ssim`` is NaN and
    ``draws`` 1 when no check was asked for.
    """

    dpm: DeepPoisoningModule
    training: DPMTrainingResult
    check_ssim: float
    draws: int
    passed: bool


@torch.no_grad()
def check_ssim(
    split: SplitModel,
    dpm: DeepPoisoningModule,
    checker: Reconstructor,
    data: ImageDataset,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> float:
    """Mean SSIM(checker(P(phi1 x)), x) over the first :data:`CHECK_IMAGES` images of ``data``.

    The features pass through float16, as they would on the wire.
    """
    images_checked = data.head(CHECK_IMAGES)
    for module in (split.featurizer, dpm, checker):
        module.to(device).eval()
    total = 0.0
    for images, _labels in batches(images_checked, batch_size, device):
        poisoned = dpm(split.featurizer(images)).half().float()
        total += ssim_per_image(checker(poisoned), images).sum().item()
    return total / max(len(images_checked), 1)


def train_checked_dpm(
    train_draw: Callable[[int], tuple[DeepPoisoningModule, DPMTrainingResult]],
    split: SplitModel,
    check: SelfCheck | None,
    data: ImageDataset,
    *,
    device: torch.device,
) -> CheckedDPM:
    """Train draw 0, 1, ... with ``train_draw(draw)`` until one passes ``check`` on ``data`` or the draws run out.

    ``train_draw`` owns what a draw is (draw 0 may continue the client's stored P; later
    draws start fresh from their own seeds). Without a check, draw 0 is returned as passed.
    """
    if check is None:
        dpm, training = train_draw(0)
        return CheckedDPM(dpm, training, math.nan, 1, True)
    for draw in range(check.draws):
        dpm, training = train_draw(draw)
        similarity = check_ssim(split, dpm, check.checker, data, device=device)
        if abs(similarity) <= check.threshold:
            return CheckedDPM(dpm, training, similarity, draw + 1, True)
    return CheckedDPM(dpm, training, similarity, check.draws, False)
