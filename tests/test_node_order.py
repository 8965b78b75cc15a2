"""Client sampling reproduces from the seed although node ids are random in every simulation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.apps.node_order import PartitionOrderedGrid

from .experiments import DP, VISUALMIXER
from .inprocess import InProcessGrid, run_in_process


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def sampled_partitions(grid: InProcessGrid, seed: int, ordered: bool) -> list[int]:
    """The partitions Flower's sampling picks (3 of 8) with ``random`` seeded to ``seed``."""
    random.seed(seed)
    source = PartitionOrderedGrid(grid) if ordered else grid  # type: ignore[arg-type]
    nodes, _ = sample_nodes(source, 1, 3)  # type: ignore[arg-type]
    return [int(grid.contexts[node].node_config["partition-id"]) for node in nodes]


def random_node_ids(count: int, seed: int) -> list[int]:
    """Node ids as a SuperLink draws them: random 63-bit integers."""
    return random.Random(seed).sample(range(1, 2**63), count)


def test_the_same_seed_samples_the_same_partitions_whatever_the_node_ids() -> None:
    grids = [InProcessGrid(VISUALMIXER, 8, {}, random_node_ids(8, draw)) for draw in range(3)]
    for seed in range(5):
        ordered = {tuple(sampled_partitions(grid, seed, ordered=True)) for grid in grids}
        assert len(ordered) == 1
    # Flower's own order: the partitions follow the node ids, so the same seed trains other clients.
    plain = {tuple(sampled_partitions(grid, seed, ordered=False)) for grid in grids for seed in range(5)}
    assert len(plain) > 5


def test_nodes_list_by_partition_and_nodes_without_one_come_last() -> None:
    grid = InProcessGrid(VISUALMIXER, 4, {}, [40, 10, 30, 20])
    del grid.contexts[30].node_config["partition-id"]
    assert list(PartitionOrderedGrid(grid).get_node_ids()) == [40, 10, 20, 30]  # type: ignore[arg-type]


@pytest.mark.parametrize("protection", ["none", "dp-fedavg"])
def test_two_runs_with_one_seed_train_the_same_clients_and_end_equal(
    tmp_path: Path, data_root: Path, protection: str
) -> None:
    config = {
        "dataset": "ylecun/mnist",
        "data-dir": str(data_root / "mnist"),
        "output-dir": str(tmp_path),
        "protection": protection,
        "samples-per-client": 32,
        "test-size": 64,
        "public-size": 0,
        "num-server-rounds": 2,
        "fraction-train": 0.5,
        "oracle-epochs": 0,
    }
    experiment = VISUALMIXER if protection == "none" else DP  # DP-FedAvg samples by Poisson, FedAvg 3 of 6
    folders = [
        run_in_process(experiment, 6, {**config, "run-name": f"run{draw}"}, random_node_ids(6, draw))
        for draw in range(2)
    ]
    participation = [json.loads((folder / "participation.json").read_text()) for folder in folders]
    assert participation[0] == participation[1]
    assert (folders[0] / "model.pt").read_bytes() == (folders[1] / "model.pt").read_bytes()
    if protection == "none":
        assert all(len(p) == 3 for p in participation[0].values())
    else:
        summary = json.loads((folders[0] / "summary.json").read_text())
        assert summary["privacy"]["dp-fedavg"]["sampling"] == "poisson"
        assert summary["privacy"]["dp-fedavg"]["sample_rate"] == 0.5
