"""Visual Feature Entropy (VFE), Eq. 2-4 of VisualMixer (Xu et al., NDSS 2024).

For a channel ``f`` with pixels in [0, 1] the forward differences are
``dx f = f(x+1, y) - f(x, y)`` and ``dy f = f(x, y+1) - f(x, y)`` and the gradient
energy is ``|grad f|^2 = dx f^2 + dy f^2``. Differences are only taken between two
pixels of the *same* region, so a region's VFE does not depend on its neighbours:

    VFE(R) = sum_{(x, y) in R} |grad f(x, y)|^2                       (Eq. 3)
    VFE(I) = alpha / |S| * sum_{R in S} VFE(R)                        (Eq. 4)

over a fixed grid ``S`` of square regions, averaged over channels. The paper's code uses
14x14 regions on 224x224 images (a 16x16 grid); for 28x28 and 32x32 images we use 4x4
regions (a 7x7 or 8x8 grid), :data:`DEFAULT_REGION_SIZE`. Higher VFE means fewer
discernible visual features.
"""

from __future__ import annotations

import torch

DEFAULT_REGION_SIZE = 4


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Return ``images`` as floats in [0, 1] (uint8 input is divided by 255)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got dtype {images.dtype}")
    return images


def squared_differences(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared forward differences ``(dx f^2, dy f^2)``, shapes ``(..., H, W-1)`` and ``(..., H-1, W)``."""
    x = as_unit_float(images)
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return dx.square_(), dy.square_()


def region_sums(dx2: torch.Tensor, dy2: torch.Tensor, region_size: int) -> torch.Tensor:
    """Sum the squared differences of pixel pairs that lie inside one region (Eq. 3).

    Args:
        dx2: ``(..., H, W-1)`` squared horizontal differences.
        dy2: ``(..., H-1, W)`` squared vertical differences.
        region_size: side of the square regions, anchored at the top left; regions at
            the right and bottom edges may be partial.

    Returns:
        ``(..., ceil(H / r), ceil(W / r))`` region sums.
    """
    if region_size < 1:
        raise ValueError(f"region_size must be a positive integer, got {region_size}")
    height, width = dy2.shape[-2] + 1, dx2.shape[-1] + 1
    rows, cols = -(-height // region_size), -(-width // region_size)
    energy = dx2.new_zeros((*dx2.shape[:-2], rows * region_size, cols * region_size))
    inside_x = (torch.arange(width - 1, device=dx2.device) % region_size) != region_size - 1
    inside_y = (torch.arange(height - 1, device=dx2.device) % region_size) != region_size - 1
    energy[..., :height, : width - 1] += dx2 * inside_x
    energy[..., : height - 1, :width] += dy2 * inside_y[:, None]
    blocks = energy.reshape(*energy.shape[:-2], rows, region_size, cols, region_size)
    return blocks.sum(dim=(-3, -1))


def region_vfe(images: torch.Tensor, region_size: int) -> torch.Tensor:
    """VFE of every region of a ``region_size`` grid (Eq. 3), per channel.

    Args:
        images: ``(B, C, H, W)`` uint8 or float in [0, 1].
        region_size: side of the square regions.

    Returns:
        ``(B, C, ceil(H / r), ceil(W / r))`` region sums.
    """
    return region_sums(*squared_differences(images), region_size)


def image_vfe(images: torch.Tensor, region_size: int = DEFAULT_REGION_SIZE, alpha: float = 1.0) -> torch.Tensor:
    """Image VFE (Eq. 4): ``alpha`` times the mean region VFE, averaged over channels.

    Args:
        images: ``(B, C, H, W)`` or ``(C, H, W)``, uint8 or float in [0, 1].
        region_size: side of the regions of the grid ``S``.
        alpha: the paper's scale factor (1 in the paper).

    Returns:
        ``(B,)`` (or a scalar for a single image) float tensor.
    """
    single = images.dim() == 3
    batch = images.unsqueeze(0) if single else images
    if batch.dim() != 4:
        raise ValueError(f"images must be (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
    dx2, dy2 = squared_differences(batch)
    # the channel mean commutes with the region sums and the mean over regions
    vfe = alpha * region_sums(dx2.mean(dim=1), dy2.mean(dim=1), region_size).mean(dim=(1, 2))
    return vfe[0] if single else vfe
