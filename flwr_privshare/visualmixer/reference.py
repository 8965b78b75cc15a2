"""A straightforward per-image, per-window loop version of Algorithm 1.

It exists to check :func:`~flwr_privshare.visualmixer.visual_mix` (same window
decisions, tested) and to measure its speed-up (``benchmarks/vim_throughput.py``). It is
far too slow for training data; use ``visual_mix``.
"""

from __future__ import annotations

import torch

from .vfe import as_unit_float


def _block_vfe_per_pixel(image: torch.Tensor, top: int, left: int, size: int) -> float:
    """Mean over channels of the block's within-block squared differences, per pixel."""
    block = image[:, top : top + size, left : left + size]
    dx = (block[:, :, 1:] - block[:, :, :-1]).square().sum()
    dy = (block[:, 1:, :] - block[:, :-1, :]).square().sum()
    return float(dx + dy) / image.shape[0] / (block.shape[1] * block.shape[2])


def reference_window_sizes(image: torch.Tensor, window_min: int, window_max: int) -> torch.Tensor:
    """``(H, W)`` window size of every pixel of one ``(C, H, W)`` image, by explicit recursion."""
    x = as_unit_float(image)
    _, height, width = x.shape
    sizes = torch.zeros((height, width), dtype=torch.int64)
    size = window_max
    blocks = [(top, left) for top in range(0, height, size) for left in range(0, width, size)]
    while blocks:
        if size == window_min:
            decided, blocks = blocks, []
        else:
            values = [_block_vfe_per_pixel(x, top, left, size) for top, left in blocks]
            median = sorted(values)[(len(values) - 1) // 2]
            decided = [block for block, value in zip(blocks, values, strict=True) if value <= median]
            split = [block for block, value in zip(blocks, values, strict=True) if value > median]
            half = size // 2
            blocks = [
                (top + dy, left + dx)
                for top, left in split
                for dy in (0, half)
                for dx in (0, half)
                if top + dy < height and left + dx < width
            ]
        for top, left in decided:
            sizes[top : top + size, left : left + size] = size
        size //= 2
    return sizes


def reference_visual_mix(
    image: torch.Tensor,
    window_min: int,
    window_max: int,
    generator: torch.Generator,
    channel_shuffle: bool = True,
) -> torch.Tensor:
    """Shuffle one ``(C, H, W)`` image window by window with ``torch.randperm``."""
    sizes = reference_window_sizes(image, window_min, window_max)
    out = image.clone()
    channels, height, width = image.shape
    visited = torch.zeros((height, width), dtype=torch.bool)
    for top in range(height):
        for left in range(width):
            if visited[top, left]:
                continue
            size = int(sizes[top, left])
            bottom, right = min(top + size, height), min(left + size, width)
            visited[top:bottom, left:right] = True
            window = image[:, top:bottom, left:right].reshape(channels, -1)
            count = window.shape[1]
            if channel_shuffle:
                perms = torch.stack([torch.randperm(count, generator=generator) for _ in range(channels)])
            else:
                perms = torch.randperm(count, generator=generator).expand(channels, count)
            out[:, top:bottom, left:right] = window.gather(1, perms).reshape(channels, bottom - top, right - left)
    return out
