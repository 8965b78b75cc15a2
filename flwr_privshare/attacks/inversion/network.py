"""The inversion network: a small U-Net (Ronneberger et al. 2015) from shuffled to original images.

Three resolutions with two Conv-GroupNorm-ReLU layers each, max pooling down, bilinear
upsampling and skip connections up, and a sigmoid output in [0, 1]. Window shuffling moves
pixels only inside windows of at most ``vim-window-max`` pixels, so a network whose
receptive field covers a few windows sees everything a window's content could be restored
from; the skips keep the exact positions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.GroupNorm(8, out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.GroupNorm(8, out_channels),
        nn.ReLU(),
    )


class InversionUNet(nn.Module):
    """``(N, C, H, W)`` shuffled images in [0, 1] -> restored images in [0, 1] (any H, W)."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.down = nn.ModuleList([_block(channels, width), _block(width, 2 * width), _block(2 * width, 4 * width)])
        self.up = nn.ModuleList([_block(6 * width, 2 * width), _block(3 * width, width)])
        self.head = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else F.max_pool2d(x, 2, ceil_mode=True))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return torch.sigmoid(self.head(x))
