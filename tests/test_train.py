"""Training helpers shared by the apps and benchmarks."""

from __future__ import annotations

import logging

import pytest
import torch

from flwr_privshare.data import ImageDataset
from flwr_privshare.models import build_model
from flwr_privshare.train import describe_device, train


def test_a_cpu_record_names_the_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert describe_device(torch.device("cpu")) == "cpu (1 thread)"
        torch.set_num_threads(2)
        assert describe_device(torch.device("cpu")) == "cpu (2 threads)"
    finally:
        torch.set_num_threads(before)


def test_a_long_step_with_a_progress_label_logs_every_epoch(caplog: pytest.LogCaptureFixture) -> None:
    data = ImageDataset(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8), torch.arange(20) % 10, 10)
    common = {"batch_size": 10, "optimizer": "adam", "learning_rate": 1e-3, "device": torch.device("cpu")}
    with caplog.at_level(logging.INFO, logger="flwr"):
        train(build_model("mnist-cnn"), data, epochs=2, generator=torch.Generator().manual_seed(0), **common)  # type: ignore[arg-type]
        assert caplog.records == []
        train(build_model("mnist-cnn"), data, epochs=2, generator=torch.Generator(), progress="oracle", **common)  # type: ignore[arg-type]
    assert [record.getMessage().split(",")[0] for record in caplog.records] == [
        "oracle: epoch 1/2 done",
        "oracle: epoch 2/2 done",
    ]
