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

# The test files that start Flower runs or train for minutes, longest first (about 200 s down to 20 s on 2 cores).
# xdist hands whole files to the workers (--dist loadfile) in collection order (--no-loadscope-reorder): the long
# ones go first and the short ones fill in at the end, so the workers finish together instead of one of them
# starting a long file while the other runs out of work.
LONGEST_FIRST = (
    "tests/attacks/test_gan_attack.py",
    "tests/test_sweep.py",
    "tests/attacks/test_membership_attack.py",
    "tests/test_app_e2e.py",
    "tests/test_fault_tolerance.py",
    "tests/attacks/test_inversion_attack.py",
    "tests/test_deployment.py",
    "tests/test_extension.py",
    "tests/test_launch.py",
    "tests/strategies/test_dp_fedavg.py",
    "tests/poisoning/test_reconstructor.py",
    "tests/test_dpm_app.py",
)
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if missing := [name for name in LONGEST_FIRST if not (ROOT / name).is_file()]:
        raise pytest.UsageError(f"tests/conftest.py: LONGEST_FIRST names files that do not exist: {missing}")
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(ROOT).as_posix(), len(rank)))


DATA_ROOT = Path(os.environ.get("PRIVSHARE_DATA_ROOT", ROOT.parent / "shared" / "datasets"))


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
