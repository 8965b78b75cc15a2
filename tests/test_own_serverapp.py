"""Our strategies in a user's own ServerApp main, which knows nothing of our run config (the README's snippet)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.models import build_model
from flwr_privshare.poisoning import Reconstructor, split_model
from flwr_privshare.results import RunFolder
from flwr_privshare.strategies import DPFedAvg, FeatureSharing, Recorded

from .experiments import DPM, VISUALMIXER
from .inprocess import InProcessGrid


def users_main(grid: Grid, context: Context, output_dir: Path) -> None:
    """The README's ServerApp main, on MNIST's model, with every client sampled."""
    model = build_model("mnist-cnn")
    num_total = len(list(grid.get_node_ids()))
    strategy = DPFedAvg(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0),
        noise_multiplier=1.0,
        clipping_norm=0.5,
        num_sampled_clients=num_total,
        num_total_clients=num_total,
        delta=1e-5,
    )
    with RunFolder(output_dir, "my-run", config=dict(context.run_config), seed=0) as folder:
        Recorded(strategy, folder).start(grid, ArrayRecord(model.state_dict()), num_rounds=2)
        folder.finish({"epsilon": strategy.privacy_report()["epsilon"]}, plots={})


def test_dp_fedavg_and_recorded_in_a_users_own_serverapp(tmp_path: Path, data_root: Path) -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    clients = {"data-dir": str(data_root / "mnist"), "protection": "none", "samples-per-client": 32, "public-size": 0}
    grid = InProcessGrid(VISUALMIXER, 3, clients)  # our ClientApp's handler on 3 nodes
    server = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={"my-own-key": 1})
    users_main(grid, server, tmp_path)  # type: ignore[arg-type]
    folder = tmp_path / "my-run"
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    assert [row["round"] for row in rows] == ["0", "1", "2"] and [row["train_replies"] for row in rows[1:]] == [
        "3",
        "3",
    ]
    assert 0 < float(rows[1]["train_epsilon"]) < float(rows[2]["train_epsilon"])
    assert json.loads((folder / "summary.json").read_text())["epsilon"] == float(rows[2]["train_epsilon"])
    assert json.loads((folder / "config.json").read_text())["config"] == {"my-own-key": 1}
    assert not (folder / "checkpoint.pt").exists()


def test_feature_sharing_and_recorded_in_a_users_own_serverapp(tmp_path: Path, data_root: Path) -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    clients = {"data-dir": str(data_root / "mnist"), "samples-per-client": 32, "public-size": 0}
    grid = InProcessGrid(DPM, 2, clients)  # the DPM app's ClientApp handler on 2 nodes
    torch.manual_seed(0)
    model = build_model("mnist-cnn")
    psi = Reconstructor("px2s2", (16, 14, 14), (1, 28, 28))  # in practice trained on public data first
    strategy = FeatureSharing("mnist-cnn", "pool1", psi, image_shape=(1, 28, 28), num_classes=10, shared_samples=16)
    with RunFolder(tmp_path, "my-dpm-run", config={"my-own-key": 1}, seed=0) as folder:
        result = Recorded(strategy, folder).start(grid, ArrayRecord(model.state_dict()), num_rounds=1)  # type: ignore[arg-type]
        folder.finish({}, plots={})
    rows = list(csv.DictReader((tmp_path / "my-dpm-run" / "rounds.csv").open()))
    assert rows[1]["train_replies"] == "2" and rows[1]["train_failures"] == "0"
    refined = result.arrays.to_torch_state_dict()
    initial = model.state_dict()
    changed = {name for name in initial if not torch.equal(initial[name], refined[name])}
    in_phi1 = {id(parameter) for parameter in split_model(model, "pool1").featurizer.parameters()}
    featurizer = {name for name, parameter in model.named_parameters() if id(parameter) in in_phi1}
    assert featurizer and changed and not changed & featurizer  # the decider phi2 was refined, phi1 kept
