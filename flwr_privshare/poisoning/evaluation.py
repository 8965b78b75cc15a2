"""What a DPM costs and what it hides: decider accuracy and reconstruction quality, original vs poisoned.

The paper's Table 1-3 quantities (Guo et al.): top-1 accuracy of phi2 on phi1 x and on
P(phi1 x), and L1 / SSIM between x and psi(features) for every reconstructor psi. Beside
the paper's SSIM, a stronger attacker's: the same psi with its raw output stretched
between the 5% and 95% quantiles instead of min-max normalised (:func:`stretch`).
:func:`reference_ssim` gives the levels to read them against: what a reconstruction that
knows nothing about the image, or only its mean colour, scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset
from ..train import batches
from .dpm import ssim_per_image
from .reconstructor import Reconstructor, stretch
from .split import SplitModel

STRETCH_TAIL = 0.05


@torch.no_grad()
def evaluate_poisoning(
    split: SplitModel,
    dpm: nn.Module,
    reconstructors: Mapping[str, Reconstructor],
    data: ImageDataset,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float]:
    """Means over ``data``: ``accuracy_original``, ``accuracy_poisoned`` and, per reconstructor ``r``,
    ``r/l1_original``, ``r/ssim_original``, ``r/l1_poisoned``, ``r/ssim_poisoned`` and the
    robustly normalised attacker's ``r/ssim_original_stretched``, ``r/ssim_poisoned_stretched``.

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
                raw = reconstructor.raw(features)
                out, stretched = reconstructor.normalise(raw), stretch(raw, STRETCH_TAIL)
                per_image = {
                    f"{name}/l1_{view}": F.l1_loss(out, images, reduction="none").flatten(1).mean(dim=1),
                    f"{name}/ssim_{view}": ssim_per_image(out, images),
                    f"{name}/ssim_{view}_stretched": ssim_per_image(stretched, images),
                }
                for key, values in per_image.items():
                    sums[key] = sums.get(key, 0.0) + values.sum().item()
    return {key: value / max(len(data), 1) for key, value in sums.items()}


@torch.no_grad()
def reference_ssim(data: ImageDataset, *, device: torch.device, batch_size: int = 256) -> dict[str, float]:
    """SSIM levels of reconstructions that know nothing, or only the mean colour, about each image of ``data``.

    ``other_image`` pairs image i with image (i - N // 2) mod N: the SSIM of a reconstructor
    that returns a plausible but unrelated image, i.e. chance. ``mean_colour`` compares each
    image with a flat image of its own per-channel mean. SSIM rewards matching luminance
    in flat regions, so neither is 0: on 32x32 CIFAR-10 they are about 0.05 and 0.14. A
    reconstruction scoring below ``mean_colour`` tells the attacker less, by SSIM, than the
    image's average colour would.

    Raises:
        ValueError: ``data`` has fewer than two images.
    """
    count = len(data)
    if count < 2:
        raise ValueError(f"reference_ssim needs at least 2 images to pair, got {count}")
    partners = data.subset(torch.roll(torch.arange(count), count // 2))
    sums = {"other_image": 0.0, "mean_colour": 0.0}
    pairs = zip(batches(data, batch_size, device), batches(partners, batch_size, device), strict=True)
    for (images, _labels), (others, _other_labels) in pairs:
        flat = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
        sums["other_image"] += ssim_per_image(others, images).sum().item()
        sums["mean_colour"] += ssim_per_image(flat, images).sum().item()
    return {key: value / count for key, value in sums.items()}
