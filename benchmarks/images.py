"""The images a throughput benchmark trains on: real CIFAR-10 test images, or random ones."""

from __future__ import annotations

import torch

from flwr_privshare.data import ImageDataset, load_split


def benchmark_images(data_dir: str, count: int) -> ImageDataset:
    """The first ``count`` test images of the CIFAR-10 folder ``data_dir``, or ``count`` random 3x32x32 ones."""
    if data_dir:
        return load_split("", "test", data_dir).head(count)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8)
    return ImageDataset(images, torch.randint(0, 10, (count,)), 10)
