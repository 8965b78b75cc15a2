"""Reconstructors psi: networks that invert a featurizer's output back to the image (DPM, Guo et al. §3.2).

A name reads ``{p|r}x{blocks}s{scale}[-c]``:

- ``p``: plain inverse bottleneck blocks (Conv1x1-BN-Conv3x3-BN-Conv1x1-ReLU); ``r``: the
  same blocks with a residual connection;
- ``x{blocks}``: blocks per stage; every stage ends with an upsampling by ``s{scale}``
  (the last stage by what is left) until the feature map has the image's size;
- head Conv1x1-BN-ReLU-Conv1x1 to the image's channels, then min-max normalisation of
  each image to [0, 1]; ``-c`` clamps to [0, 1] instead.

``px2s2`` is the attacker's straw man the DPM trains against; the others of
:data:`RECONSTRUCTORS` are unseen by the DPM and test whether the poisoning generalises.
Two families lie outside that audited one, so that the audited reconstructors stay unseen:
:data:`ENSEMBLE_RECONSTRUCTORS` are further straw men a DPM may train against together
with px2s2 (:func:`~flwr_privshare.poisoning.train_dpm`), and :data:`CHECK_RECONSTRUCTORS`
are the ones a client checks its DPM with before it shares anything
(:mod:`~flwr_privshare.poisoning.self_check`). All are trained with L1 on ``(phi1(z), z)``
pairs from the public split only (:func:`train_reconstructor`).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset
from ..train import batches

RECONSTRUCTORS = ("px2s2", "px4s2", "rx2s2", "rx4s2", "rx4s4", "rx2s2-c")
ENSEMBLE_RECONSTRUCTORS = ("px3s2", "rx3s2", "rx3s2-c")
CHECK_RECONSTRUCTORS = ("rx3s2", "rx5s2")
KNOWN_RECONSTRUCTORS = tuple(dict.fromkeys(RECONSTRUCTORS + ENSEMBLE_RECONSTRUCTORS + CHECK_RECONSTRUCTORS))
_NAME = re.compile(r"^(?P<kind>[pr])x(?P<blocks>\d+)s(?P<scale>\d+)(?P<clamp>-c)?$")


class InverseBottleneck(nn.Module):
    """Conv1x1 (expand 2x) - BN - Conv3x3 - BN - Conv1x1 (project) - ReLU, optionally residual."""

    def __init__(self, channels: int, residual: bool) -> None:
        super().__init__()
        hidden = 2 * channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.Conv2d(hidden, channels, 1),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return F.relu(x + out if self.residual else out)


class Reconstructor(nn.Module):
    """psi: features ``(C, h, w)`` -> images ``(image C, H, W)`` in [0, 1]; see the module docstring.

    Args:
        name: one of :data:`KNOWN_RECONSTRUCTORS` (audited, ensemble and check architectures).
        feature_shape: ``(C, h, w)`` of the featurizer's output.
        image_shape: ``(C, H, W)`` of the images.
    """

    def __init__(self, name: str, feature_shape: tuple[int, int, int], image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if name not in KNOWN_RECONSTRUCTORS:
            raise ValueError(f"reconstructor must be one of {KNOWN_RECONSTRUCTORS}, got {name!r}")
        match = _NAME.match(name)
        assert match is not None
        channels = feature_shape[0]
        residual = match["kind"] == "r"
        layers: list[nn.Module] = []
        for factor in upsampling_factors(feature_shape[1], image_shape[1], int(match["scale"])):
            layers += [InverseBottleneck(channels, residual) for _ in range(int(match["blocks"]))]
            if factor > 1:
                layers.append(nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False))
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, image_shape[0], 1),
        )
        self.name = name
        self.image_size = (image_shape[1], image_shape[2])
        self.clamp = match["clamp"] is not None

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        """The head's output at the image's size, before the output normalisation."""
        out = self.head(self.stages(features.float()))
        if out.shape[-2:] != self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return out

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Map :meth:`raw` output to [0, 1] images: min-max per image, or a clamp for ``-c``."""
        return (raw + 0.5).clamp(0.0, 1.0) if self.clamp else stretch(raw, 0.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.raw(features))


def stretch(images: torch.Tensor, tail: float) -> torch.Tensor:
    """Map each image's ``tail`` and ``1 - tail`` quantiles to 0 and 1 and clamp; ``tail`` 0 is min-max.

    Min-max normalisation lets a few extreme pixels squeeze the rest of the image to one
    grey level, which a DPM can exploit (experiments/dpm_app, experiments/dpm_transfer). An attacker is free to
    normalise a reconstructor's raw output more robustly, e.g. with ``tail`` 0.05.

    Raises:
        ValueError: ``tail`` is not in [0, 0.5).
    """
    if not 0.0 <= tail < 0.5:
        raise ValueError(f"tail must be in [0, 0.5), got {tail}")
    flat = images.flatten(1)
    if tail > 0:
        bounds = torch.quantile(flat, torch.tensor([tail, 1.0 - tail], device=flat.device), dim=1)
        low, high = bounds[0].unsqueeze(1), bounds[1].unsqueeze(1)
    else:
        low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-8)).clamp(0.0, 1.0).view_as(images)


def upsampling_factors(feature_size: int, image_size: int, scale: int) -> list[int]:
    """Per-stage upsampling: ``scale`` until less is left, then the rest (one stage of 1 if none is needed)."""
    remaining = max(round(image_size / feature_size), 1)
    factors = []
    while remaining > 1:
        factor = min(scale, remaining)
        factors.append(factor)
        remaining = math.ceil(remaining / factor)
    return factors or [1]


def train_reconstructor(
    reconstructor: Reconstructor,
    encoder: nn.Module,
    public: ImageDataset,
    *,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    device: torch.device,
    generator: torch.Generator,
) -> float:
    """Fit ``reconstructor`` to invert the frozen ``encoder`` with L1(psi(encoder(z)), z); return the last epoch's L1.

    ``encoder`` is phi1 for the attacker's reconstructors, or ``P o phi1`` for the
    secondary attack of someone who holds a client's DPM.
    """
    reconstructor.to(device).train()
    encoder.to(device).eval()
    optimizer = torch.optim.Adam(reconstructor.parameters(), lr=learning_rate)
    epoch_loss = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for images, _labels in batches(public, batch_size, device, generator):
            with torch.no_grad():
                features = encoder(images)
            loss = F.l1_loss(reconstructor(features), images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(images)
            count += len(images)
        epoch_loss = total / max(count, 1)
    reconstructor.eval()
    return epoch_loss
