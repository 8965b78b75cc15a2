"""What a DPM costs and what it hides: decider accuracy and reconstruction quality, original vs poisoned.

The paper's Table 1-3 quantities (Guo et al.): top-1 accuracy of phi2 on phi1 x and on
P(phi1 x), and L1 / SSIM between x and psi(features) for every reconstructor psi.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset
from ..train import batches
from .dpm import ssim_per_image
from .split import SplitModel


@torch.no_grad()
def evaluate_poisoning(
    split: SplitModel,
    dpm: nn.Module,
    reconstructors: Mapping[str, nn.Module],
    data: ImageDataset,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float]:
    """Means over ``data``: ``accuracy_original``, ``accuracy_poisoned`` and, per reconstructor ``r``,
    ``r/l1_original``, ``r/ssim_original``, ``r/l1_poisoned``, ``r/ssim_poisoned``.

    Features pass through float16 on their way to the decider and the reconstructors,
    as they would on the wire.
    """
    modules = [split.featurizer, split.decider, dpm, *reconstructors.values()]
    for module in modules:
        module.to(device).eval()
    sums: dict[str, float] = {"accuracy_original": 0.0, "accuracy_poisoned": 0.0}
    for images, labels in batches(data, batch_size, device):
        original = split.featurizer(images)
        views = {"original": original.half().float(), "poisoned": dpm(original).half().float()}
        for view, features in views.items():
            correct = split.decider(features).argmax(dim=1) == labels
            sums[f"accuracy_{view}"] += correct.sum().item()
            for name, reconstructor in reconstructors.items():
                out = reconstructor(features)
                l1 = F.l1_loss(out, images, reduction="none").flatten(1).mean(dim=1)
                sums[f"{name}/l1_{view}"] = sums.get(f"{name}/l1_{view}", 0.0) + l1.sum().item()
                sums[f"{name}/ssim_{view}"] = (
                    sums.get(f"{name}/ssim_{view}", 0.0) + ssim_per_image(out, images).sum().item()
                )
    return {key: value / max(len(data), 1) for key, value in sums.items()}
