"""The Deep Poisoning Module P (Guo et al., arXiv 1912.06895, §3.3) and its training.

P sits between the frozen featurizer phi1 and decider phi2 and keeps the feature shape.
A client trains its own P so that the decider still classifies the poisoned features
while the reconstructor psi cannot recover the image from them:

    L = CE(phi2(P(phi1 x)), y) + lambda * |SSIM(psi(P(phi1 x)), x)|        (Eq. 3)

The paper minimises SSIM itself; this minimises its magnitude, because a strongly
negative SSIM is an inverted image that an attacker recovers with ``1 - x``. Clients share
``P(phi1 x)`` and labels; P stays in the client's state and never leaves it.

A P trained against one straw man psi learns what that psi is sensitive to, and
reconstructors it has not seen still recover part of the image. ``feature_noise`` makes
the SSIM term an expectation over Gaussian perturbations of the poisoned features
(expectation over transformation, Athalye et al., ICML 2018): psi sees
``P(phi1 x) + sigma * std(P(phi1 x)) * N(0, I)``, so the poisoning cannot rest on exact
feature values and transfers better to unseen reconstructors (experiments/dpm_app, experiments/dpm_transfer).
The decider always sees the clean poisoned features.

``ensemble`` adds further straw men, of other architectures than the audited
reconstructors: the SSIM term becomes the mean of ``|SSIM|`` over px2s2 and them. A P that
fools several architectures at once is far more likely to fool an unseen one, as with
ensemble-based transferable adversarial examples (Liu et al., ICLR 2017); this is our
addition, not the paper's (experiments/dpm_app, experiments/dpm_transfer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from pytorch_msssim import ssim
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset
from ..train import batches
from .split import SplitModel

DPM_BLOCKS = 4


class PoisoningBlock(nn.Module):
    """Residual bottleneck: x + Conv1x1 (reduce 2x) - GN - ReLU - Conv3x3 - GN - ReLU - Conv1x1 (expand).

    The last convolution starts at zero, so an untrained P is the identity and the
    decider's accuracy is intact before the SSIM term pushes the features away.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 8)
        groups = 4 if hidden % 4 == 0 else 1
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.GroupNorm(groups, hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.GroupNorm(groups, hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )
        last = self.body[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DeepPoisoningModule(nn.Sequential):
    """P: :data:`DPM_BLOCKS` residual bottleneck blocks on ``channels`` feature channels; output shape = input shape."""

    def __init__(self, channels: int, blocks: int = DPM_BLOCKS) -> None:
        super().__init__(*[PoisoningBlock(channels) for _ in range(blocks)])


def ssim_per_image(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """SSIM (Wang et al. 2004, pytorch-msssim's Gaussian window) of each pair of [0, 1] images."""
    return ssim(reconstructions, images, data_range=1.0, size_average=False)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for ``modules`` inside the block; their previous state after it."""
    saved = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    try:
        for module in modules:
            module.eval().requires_grad_(False)
        yield
    finally:
        for module, training, flags in saved:
            module.train(training)
            for parameter, flag in zip(module.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)


@dataclass(frozen=True)
class DPMTrainingResult:
    """Mean cross-entropy and mean SSIM(psi(P(phi1 x)), x) of the last epoch."""

    cross_entropy: float
    ssim: float


def train_dpm(
    dpm: DeepPoisoningModule,
    split: SplitModel,
    reconstructor: nn.Module,
    data: ImageDataset,
    *,
    ssim_weight: float,
    epochs: int,
    feature_noise: float = 0.0,
    ensemble: Sequence[nn.Module] = (),
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    device: torch.device,
    generator: torch.Generator,
) -> DPMTrainingResult:
    """Train ``dpm`` in place on ``data`` with Eq. 3 (``ssim_weight`` = lambda); phi1, phi2 and psi stay frozen.

    ``feature_noise`` (sigma) is the relative std of the Gaussian noise psi's input gets
    in the SSIM term (module docstring); 0 is the paper's loss. ``ensemble`` holds further
    frozen straw men: the SSIM term is then the mean ``|SSIM|`` over ``reconstructor`` and
    them, all on the same (noisy) features. The result's ``ssim`` is ``reconstructor``'s alone.

    Raises:
        ValueError: ``ssim_weight`` or ``feature_noise`` is negative, or ``epochs`` is not positive.
    """
    if ssim_weight < 0:
        raise ValueError(f"ssim_weight (lambda) must be >= 0, got {ssim_weight}")
    if feature_noise < 0:
        raise ValueError(f"feature_noise must be >= 0, got {feature_noise}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    dpm.to(device).train()
    straw_men = (reconstructor, *ensemble)
    for module in (*split, *straw_men):
        module.to(device)
    optimizer = torch.optim.Adam(dpm.parameters(), lr=learning_rate)
    cross_entropy, similarity = float("nan"), float("nan")
    with frozen(split.featurizer, split.decider, *straw_men):
        for _ in range(epochs):
            ce_sum, ssim_sum, count = 0.0, 0.0, 0
            for images, labels in batches(data, batch_size, device, generator):
                with torch.no_grad():
                    features = split.featurizer(images)
                poisoned = dpm(features)
                ce = F.cross_entropy(split.decider(poisoned), labels)
                attacked = poisoned
                if feature_noise > 0:
                    noise = torch.randn(poisoned.shape, generator=generator).to(device)
                    attacked = poisoned + feature_noise * poisoned.detach().std() * noise
                ssims = ssim_per_image(reconstructor(attacked), images)
                if ssim_weight > 0:
                    similarity_term = ssims.abs().mean()
                    for member in ensemble:
                        similarity_term = similarity_term + ssim_per_image(member(attacked), images).abs().mean()
                    loss = ce + ssim_weight * similarity_term / len(straw_men)
                else:
                    loss = ce
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                ce_sum += ce.item() * len(labels)
                ssim_sum += ssims.detach().sum().item()
                count += len(labels)
            cross_entropy, similarity = ce_sum / max(count, 1), ssim_sum / max(count, 1)
    dpm.eval()
    return DPMTrainingResult(cross_entropy, similarity)


@torch.no_grad()
def poisoned_features(
    featurizer: nn.Module,
    dpm: nn.Module | None,
    data: ImageDataset,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float16,
    batch_size: int = 256,
) -> torch.Tensor:
    """``P(phi1 x)`` for every image of ``data`` (``phi1 x`` when ``dpm`` is None), on the CPU in ``dtype``."""
    featurizer.to(device).eval()
    if dpm is not None:
        dpm.to(device).eval()
    chunks = []
    for images, _labels in batches(data, batch_size, device):
        features = featurizer(images)
        chunks.append((dpm(features) if dpm is not None else features).to("cpu", dtype))
    return torch.cat(chunks)
