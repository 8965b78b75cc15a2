"""MDP as a protection: a real run under both feature sources, what leaves the client (train and query replies),
composition with DP-SGD, and a client that never got the feature network failing alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.models import build_model
from flwr_privshare.protections.mdp import FEATURE_NETWORK, FEATURE_NETWORK_CONFIG, STATE_KEY, client_key
from flwr_privshare.report import markdown, row_of

from ..experiments import DP, VISUALMIXER
from ..inprocess import run_in_process

TINY = {
    "protection": "mdp",
    "samples-per-client": 32,
    "public-size": 300,
    "test-size": 100,
    "num-server-rounds": 1,
    "batch-size": 16,
    "mdp-steps": 3,
    "mdp-pretrain-epochs": 1,
    "mdp-audit-size": 32,
    "mdp-batch-size": 64,
    "oracle-epochs": 1,
}
CLIENT_METRICS = {"mdp-ssim", "mdp-label-differs", "mdp-distance-start", "mdp-distance-end", "mdp-seconds-per-image"}


@pytest.fixture(autouse=True)
def _client_runtime_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 7


def context_for(data_root: Path, partition_id: int = 0, **overrides: object) -> Context:
    run_config = {"data-dir": str(data_root / "cifar10"), **TINY, **overrides}
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition_id, "num-partitions": 4},
        state=RecordDict(),
        run_config=run_config,  # type: ignore[arg-type]
    )


def train_message() -> Message:
    torch.manual_seed(0)
    content = RecordDict(
        {"arrays": ArrayRecord(build_model("cifar-cnn").state_dict()), "config": ConfigRecord({"server-round": 1})}
    )
    return Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN)


@pytest.mark.parametrize("source", ["public", "global-model"])
def test_a_run_reports_ssim_changed_labels_and_the_oracles_view_under_both_sources(
    data_root: Path, tmp_path: Path, source: str
) -> None:
    config = {"data-dir": str(data_root / "cifar10"), "output-dir": str(tmp_path), **TINY}
    config |= {"mdp-feature-source": source, "mdp-record-dir": str(tmp_path / "records")}
    folder = run_in_process(VISUALMIXER, 2, config)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == "fedavg+mdp" and summary["client_failures"] == 0
    report, oracle = summary["privacy"]["mdp"], summary["privacy"]["oracle"]
    assert report["feature_source"] == source and report["copies"] == 1
    assert report["clients"]["label_differs"] == 1.0 and report["audit"]["label_differs"] == 1.0
    assert 0.5 < report["clients"]["ssim"] <= 1.0 and report["audit"]["images"] == 32
    assert report["clients"]["distance_end"] < report["clients"]["distance_start"]
    # the headline accuracy is the benign test set's; the oracle saw the selected and the target classes
    assert oracle["view"] == "plain" and summary["final_accuracy"] == summary["final_plain_accuracy"]
    assert set(oracle["views"]) == {"plain", "mdp-target", "mdp-selected"}
    assert oracle["views"]["mdp-selected"] + oracle["views"]["mdp-target"] <= 1.0
    # the run and sweep tables show the SSIM and the oracle's two views
    row = row_of(folder)
    assert row["mdp_ssim"] == report["clients"]["ssim"] and row["vfe_gain"] is None
    assert (row["mdp_oracle_selected"], row["mdp_oracle_target"]) == (
        oracle["views"]["mdp-selected"],
        oracle["views"]["mdp-target"],
    )
    assert "| SSIM (modified, selected) | oracle: selected class | oracle: target class |" in markdown([row])
    # every client kept its record on its own machine
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["mdp-record-0.pt", "mdp-record-1.pt"]
    # on the wire: the broadcast's replies (round 0, public source only) are metrics, the train replies a model
    wire = json.loads((folder / "wire.json").read_text())
    stages = [(entry["round"], entry["stage"], len(entry["replies"])) for entry in wire]
    assert stages == ([(0, "mdp-broadcast", 2)] if source == "public" else []) + [(1, "train", 2)]
    for entry in wire:
        for reply in entry["replies"]:
            kinds = {name: record["type"] for name, record in reply.items()}
            assert kinds == (
                {"mdp-metrics": "metric"} if entry["round"] == 0 else {"arrays": "array", "metrics": "metric"}
            )


def test_an_mdp_client_sends_only_model_arrays_and_scalar_metrics(data_root: Path) -> None:
    context = context_for(data_root, **{"mdp-feature-source": "global-model", "mdp-copies": 2})
    reply = VISUALMIXER.train(train_message(), context)
    content = reply.content
    assert set(content.keys()) == {"arrays", "metrics"} and not content.config_records
    expected = {name: tuple(p.shape) for name, p in build_model("cifar-cnn").state_dict().items()}
    assert {name: tuple(a.shape) for name, a in content.array_records["arrays"].items()} == expected
    metrics = dict(content.metric_records["metrics"])
    assert set(metrics) == {"loss", "num-examples", "partition-id", "train-seconds", "on-cuda", *CLIENT_METRICS}
    assert metrics["num-examples"] == 64 and metrics["mdp-label-differs"] == 1.0  # T = 2 copies of 32 images
    assert client_key(42, context) not in metrics.values()
    # the distorted data stay on the client
    assert context.state.array_records[STATE_KEY]["images"].shape == (64, 3, 32, 32)


def test_the_feature_network_arrives_by_query_and_the_reply_is_metrics_only(data_root: Path) -> None:
    context = context_for(data_root, 1)
    network = build_model("cifar-cnn")
    query = Message(
        RecordDict(
            {
                FEATURE_NETWORK: ArrayRecord(network.state_dict()),
                FEATURE_NETWORK_CONFIG: ConfigRecord({"num-outputs": 10}),
            }
        ),
        dst_node_id=7,
        message_type=MessageType.QUERY,
    )
    reply = VISUALMIXER.query(query, context)
    assert list(reply.content.keys()) == ["mdp-metrics"] and set(reply.content.metric_records["mdp-metrics"]) == (
        CLIENT_METRICS
    )
    kept = context.state.array_records[STATE_KEY]["images"].numpy()
    # the next train call trains on the kept data without distorting again
    trained = VISUALMIXER.train(train_message(), context)
    assert trained.content.metric_records["metrics"]["num-examples"] == 32
    assert np.array_equal(context.state.array_records[STATE_KEY]["images"].numpy(), kept)


def test_a_client_without_the_feature_network_fails_instead_of_training_on_plain_data(data_root: Path) -> None:
    with pytest.raises(RuntimeError, match="feature network did not reach it before round 1"):
        VISUALMIXER.train(train_message(), context_for(data_root))


def test_mdp_composes_with_dp_sgd(data_root: Path) -> None:
    context = context_for(data_root, protection="mdp,dp-sgd", **{"mdp-feature-source": "global-model"})
    context.run_config.update({"batch-size": 16, "target-epsilon": 8.0})
    reply = DP.train(train_message(), context)
    metrics = reply.content.metric_records["metrics"]
    assert "epsilon" in metrics and metrics["mdp-label-differs"] == 1.0 and STATE_KEY in context.state
