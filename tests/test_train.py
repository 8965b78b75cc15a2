"""Training helpers shared by the apps and benchmarks."""

from __future__ import annotations

import torch

from flwr_privshare.train import describe_device


def test_a_cpu_record_names_the_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert describe_device(torch.device("cpu")) == "cpu (1 thread)"
        torch.set_num_threads(2)
        assert describe_device(torch.device("cpu")) == "cpu (2 threads)"
    finally:
        torch.set_num_threads(before)
