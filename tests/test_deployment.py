"""The Deployment Engine: a SuperLink and two SuperNodes on loopback, each node reading only its own folder."""

from __future__ import annotations

import json
from pathlib import Path

from flwr_privshare.data.export import main as partition
from flwr_privshare.deployment import LoopbackDeployment
from flwr_privshare.launch import run_app

ROOT = Path(__file__).resolve().parents[1]


def test_two_rounds_of_visualmixer_with_dp_fedavg_on_a_superlink_and_two_supernodes(
    tmp_path: Path, data_root: Path
) -> None:
    nodes = tmp_path / "nodes"
    partition([str(data_root / "mnist"), "--num-partitions", "2", "--output", str(nodes), "--samples-per-client", "64"])
    node_configs = [
        {"partition-id": i, "num-partitions": 2, "data-dir": str(nodes / f"partition-{i}")} for i in range(2)
    ]
    config = {
        "data-dir": str(data_root / "mnist"),
        "dataset": "ylecun/mnist",
        "output-dir": str(tmp_path / "out"),
        "run-name": "run",
        "protection": "visualmixer,dp-fedavg",
        "num-server-rounds": 2,
        "samples-per-client": 64,
        "test-size": 100,
        "public-size": 500,
        "batch-size": 32,
    }
    with LoopbackDeployment(node_configs) as deployment:
        outcome = run_app(ROOT / "simulations" / "dp_fedavg_cifar", config, superlink=deployment, timeout_s=600)
        pids = [process.pid for process in deployment.processes]
        assert outcome.completed, outcome.log[-3000:] + deployment.log("supernode-0")[-2000:]
        assert "Starting Flower SuperLink" in deployment.log("superlink")
    for pid in pids:  # every process the deployment started is gone
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    summary = json.loads((tmp_path / "out" / "run" / "summary.json").read_text())
    assert summary["method"] == "dp-fedavg+visualmixer" and summary["num_clients"] == 2 and summary["num_rounds"] == 2
    assert summary["client_failures"] == 0 and summary["epsilon"] > 0
    rounds = json.loads((tmp_path / "out" / "run" / "wire.json").read_text())
    assert [len(entry["replies"]) for entry in rounds] == [2, 2]  # both nodes answered each round
    assert json.loads((tmp_path / "out" / "run" / "participation.json").read_text()) == {"1": [0, 1], "2": [0, 1]}
