"""Shared fixtures: the offline data sets beside the repository and a private cache folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flwr_privshare.data import ImageDataset, load_split
from flwr_privshare.launch import LocalSuperLink

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test workers share the cores: one intra-op thread each, or their OpenMP threads spin against
    # each other (the flwr runs' Ray actors already train on one thread each).
    torch.set_num_threads(1)

DATA_ROOT = Path(
    os.environ.get("PRIVSHARE_DATA_ROOT", Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
)


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "cifar10" / "test.parquet").is_file():
        pytest.fail(f"offline data sets not found under {DATA_ROOT}; set PRIVSHARE_DATA_ROOT")
    return DATA_ROOT


@pytest.fixture(scope="session")
def cifar_test(data_root: Path) -> ImageDataset:
    return load_split("uoft-cs/cifar10", "test", str(data_root / "cifar10"))


@pytest.fixture(scope="session")
def cifar_images(cifar_test: ImageDataset) -> torch.Tensor:
    """64 real CIFAR-10 test images, uint8."""
    return cifar_test.images[:64]


@pytest.fixture(scope="session")
def mnist_test(data_root: Path) -> ImageDataset:
    return load_split("ylecun/mnist", "test", str(data_root / "mnist"))


@pytest.fixture(scope="session")
def superlink() -> Iterator[LocalSuperLink]:
    """One private SuperLink for every end-to-end run of the session (its start-up is paid once)."""
    with LocalSuperLink() as link:
        yield link
