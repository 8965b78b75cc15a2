"""Random crop with zero padding and horizontal flip, per image, vectorised over the batch.

The standard CIFAR-10 augmentation (He et al. 2016, Section 4.2: pad 4, random 32x32 crop,
random horizontal flip). torchvision's v2 transforms draw one set of parameters per call,
so a batch tensor would get one crop for all its images; here every image draws its own
offsets and flip, and one gather cuts all crops at once on the batch's device and dtype
(``uint8`` in the training loops, before scaling to [0, 1]). Labels are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip", "crop-flip")


@dataclass(frozen=True)
class Augmentation:
    """Which augmentation a training loop applies to every batch.

    Attributes:
        crop_padding: zero padding of the random crop (0: no crop).
        flip: whether every image is mirrored left-right with probability 1/2.
    """

    crop_padding: int = 0
    flip: bool = False

    @classmethod
    def named(cls, name: str, padding: int = 4) -> Augmentation:
        """``"none"``, ``"flip"`` or ``"crop-flip"`` (with ``padding``)."""
        if name not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {name!r}")
        return cls(crop_padding=padding if name == "crop-flip" else 0, flip=name != "none")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment ``(B, C, H, W)`` images; random parameters come from ``generator`` (a CPU one).

        The parameters are drawn on the CPU whatever the images' device, so the same seed
        gives bit-identical crops and flips on CPU and GPU.
        """
        if not self.active or len(images) == 0:
            return images
        count = len(images)
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.flip:
            mirrored = torch.rand(count, generator=generator) < 0.5
            images = torch.where(mirrored.to(images.device).view(count, 1, 1, 1), images.flip(-1), images)
        return images


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad every side by ``padding`` and cut an ``H x W`` crop at a random offset per image.

    Offsets are uniform in ``[0, 2 * padding]`` on each axis. One advanced-indexing gather
    picks every image's rows and columns, so there is no loop over images.
    """
    count, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, count), generator=generator).to(images.device)
    rows = offsets[0].view(count, 1) + torch.arange(height, device=images.device)
    cols = offsets[1].view(count, 1) + torch.arange(width, device=images.device)
    batch = torch.arange(count, device=images.device).view(count, 1, 1, 1)
    channel = torch.arange(channels, device=images.device).view(1, channels, 1, 1)
    return padded[batch, channel, rows.view(count, 1, height, 1), cols.view(count, 1, 1, width)]
