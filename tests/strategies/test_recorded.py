"""Recorded: failed clients are counted and reported, the round goes on, the order is fixed."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedProx, Result
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.apps.dpm import ContentOrderedFedAvg
from flwr_privshare.apps.fedavg import aggregate_client_metrics
from flwr_privshare.checkpoint import RoundCheckpoint, config_hash
from flwr_privshare.config import ConfigError
from flwr_privshare.results import RunFolder
from flwr_privshare.strategies import DPFedAvg, Recorded
from flwr_privshare.strategies.recorded import MAX_REASON_CHARS, truncated


def reply(weights: np.ndarray, examples: int, instruction: Message | None = None) -> Message:
    instruction = instruction or Message(content=RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(weights)}),
            "metrics": MetricRecord({"loss": float(weights.mean()), "num-examples": examples}),
        }
    )
    return Message(content=content, reply_to=instruction)


def failure() -> Message:
    instruction = Message(content=RecordDict(), dst_node_id=6, message_type=MessageType.TRAIN)
    return Message(error=Error(code=2, reason="ClientApp raised"), reply_to=instruction)


def test_failures_are_counted_and_the_others_aggregated(tmp_path: Path) -> None:
    strategy = Recorded(FedAvg(min_train_nodes=1, min_available_nodes=1), RunFolder(tmp_path, "run", {}, seed=0))
    arrays, metrics = strategy.aggregate_train(
        1, [reply(np.full(3, 1.0, np.float32), 10), failure(), reply(np.full(3, 4.0, np.float32), 30)]
    )
    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["w"].numpy(), np.full(3, 3.25))  # (1*10 + 4*30) / 40
    assert strategy.failures == {1: 1}
    wire = strategy.wire_log[0]["replies"]
    assert len(wire) == 2 and all(set(r) == {"arrays", "metrics"} for r in wire)


def test_the_partitions_of_the_replies_without_an_error_are_recorded_per_round(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "run", {}, seed=0)
    inner = FedAvg(min_train_nodes=1, min_available_nodes=1, train_metrics_aggr_fn=aggregate_client_metrics)
    strategy = Recorded(inner, folder)
    first, second = reply(np.ones(3, np.float32), 10), reply(np.zeros(3, np.float32), 10)
    first.content.metric_records["metrics"]["partition-id"] = 7
    second.content.metric_records["metrics"]["partition-id"] = 2
    _, metrics = strategy.aggregate_train(1, [first, failure(), second])
    strategy.aggregate_train(2, [reply(np.ones(3, np.float32), 10)])  # no partition reported: nothing recorded
    assert json.loads((folder.path / "participation.json").read_text()) == {"1": [2, 7]}
    assert metrics is not None and "partition-id" not in metrics  # the apps' aggregation does not average ids


def test_a_round_where_every_client_fails_keeps_the_model(tmp_path: Path) -> None:
    strategy = Recorded(FedAvg(min_train_nodes=1, min_available_nodes=1), RunFolder(tmp_path, "run", {}, seed=0))
    arrays, metrics = strategy.aggregate_train(2, [failure(), failure()])
    assert arrays is None and metrics is None and strategy.failures == {2: 2}


def test_aggregation_does_not_depend_on_arrival_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(1000).astype(np.float32) for _ in range(5)]
    results = []
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1]):
        strategy = Recorded(FedAvg(min_available_nodes=1), RunFolder(tmp_path, f"run{order[0]}", {}, seed=0))
        arrays, _ = strategy.aggregate_train(1, [reply(values[i], 7 + 3 * i) for i in order])
        assert arrays is not None
        results.append(arrays["w"].numpy())
    assert np.array_equal(results[0], results[1])


class EchoGrid:
    """A grid whose nodes answer every train message with the received arrays plus 0.01 (node 3 fails)."""

    def __init__(self, num_nodes: int) -> None:
        self.node_ids = list(range(1, num_nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.node_ids

    def send_and_receive(self, messages: list[Message], timeout: float) -> list[Message]:
        replies = []
        for msg in messages:
            if msg.metadata.dst_node_id == 3:
                replies.append(Message(error=Error(code=2, reason="boom"), reply_to=msg))
                continue
            weights = msg.content.array_records["arrays"]["w"].numpy() + 0.01
            replies.append(reply(weights.astype(np.float32), 10, msg))
        return replies


@pytest.mark.parametrize("inner", ["fedavg", "fedprox", "dp-fedavg"])
def test_recorded_rounds_of_any_inner_strategy(tmp_path: Path, inner: str) -> None:
    base = FedProx(proximal_mu=0.1) if inner == "fedprox" else FedAvg(fraction_evaluate=0.0)
    wrapped = (
        DPFedAvg(base, noise_multiplier=1.0, clipping_norm=1.0, num_sampled_clients=4, num_total_clients=4, delta=1e-5)
        if inner == "dp-fedavg"
        else base
    )
    folder = RunFolder(tmp_path, "run", {}, seed=0)
    strategy = Recorded(wrapped, folder)
    result = strategy.start(
        EchoGrid(4),  # type: ignore[arg-type]
        ArrayRecord({"w": Array(np.zeros(5, np.float32))}),
        num_rounds=2,
        evaluate_fn=lambda server_round, arrays: MetricRecord({"accuracy": 0.5}),
    )
    assert strategy.failures == {1: 1, 2: 1}
    assert [row["round"] for row in folder.rounds] == [0, 1, 2]
    assert all(row["train_failures"] == 1 and row["train_replies"] == 3 for row in folder.rounds[1:])
    if inner == "dp-fedavg":
        epsilons = [row["train_epsilon"] for row in folder.rounds[1:]]
        assert epsilons[0] < epsilons[1]
    else:
        np.testing.assert_allclose(result.arrays["w"].numpy(), np.full(5, 0.02), atol=1e-6)


class ClientsGrid:
    """A Grid whose nodes answer with ``answer(message)``: enough for ``Strategy.start``."""

    def __init__(self, num_nodes: int, answer: Callable[[Message], Message]) -> None:
        self.answer = answer
        self.node_ids = list(range(1, num_nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.node_ids

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None) -> list[Message]:
        return [self.answer(message) for message in messages]


def trained(message: Message) -> Message:
    """A client that adds 1 to every array and reports a metric of its own named ``train_loss``."""
    if message.metadata.message_type == MessageType.EVALUATE:
        return Message(RecordDict({"metrics": MetricRecord({"loss": 0.5, "num-examples": 10})}), reply_to=message)
    arrays = ArrayRecord({k: Array(v.numpy() + 1) for k, v in message.content.array_records["arrays"].items()})
    metrics = MetricRecord({"train_loss": 2.0, "num-examples": 10})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)


def broken(message: Message) -> Message:
    return Message(Error(code=3, reason="ClientApp raised ValueError('disk full')"), reply_to=message)


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def test_a_run_in_which_every_reply_fails_keeps_the_initial_model_and_records_why(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "run", {}, seed=0)
    strategy = Recorded(FedAvg(fraction_evaluate=0.0, min_available_nodes=1), folder)
    initial = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    result = strategy.start(ClientsGrid(2, broken), initial, num_rounds=2)  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.arrays["w"].numpy(), np.zeros(3))
    rows = list(csv.DictReader((folder.path / "rounds.csv").open()))
    assert [(row["train_replies"], row["train_failures"]) for row in rows[1:]] == [("0", "2"), ("0", "2")]
    wire = json.loads((folder.path / "wire.json").read_text())
    assert [entry["errors"] for entry in wire] == [
        [{"node_id": node, "code": 3, "reason": "ClientApp raised ValueError('disk full')"} for node in (1, 2)]
    ] * 2
    assert strategy.failed_clients() == [
        {"node_id": 1, "partition_id": None, "failures": 2},
        {"node_id": 2, "partition_id": None, "failures": 2},
    ]
    failures = json.loads((folder.path / "failures.json").read_text())
    assert [(entry["round"], entry["node_id"]) for entry in failures] == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_evaluate_replies_are_audited_and_client_metric_names_are_not_prefixed_twice(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "run", {}, seed=0)
    strategy = Recorded(FedAvg(fraction_evaluate=1.0, min_available_nodes=1, min_evaluate_nodes=1), folder)
    initial = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    result = strategy.start(ClientsGrid(2, trained), initial, num_rounds=1)  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.arrays["w"].numpy(), np.ones(3))
    (row,) = list(csv.DictReader((folder.path / "rounds.csv").open()))[1:]
    assert row["train_loss"] == "2.0" and "train_train_loss" not in row and row["evaluate_loss"] == "0.5"
    stages = [(entry["stage"], len(entry["replies"])) for entry in json.loads((folder.path / "wire.json").read_text())]
    assert stages == [("train", 2), ("evaluate", 2)]


def test_the_dpm_bootstrap_aggregates_in_content_order() -> None:
    rng = np.random.default_rng(3)
    replies = [reply(rng.standard_normal(1000).astype(np.float32), 7 + 3 * i) for i in range(5)]
    strategy = ContentOrderedFedAvg(min_available_nodes=1)
    first, _ = strategy.aggregate_train(1, replies)
    second, _ = strategy.aggregate_train(1, replies[::-1])
    assert first is not None and second is not None
    assert first["w"].numpy().tobytes() == second["w"].numpy().tobytes()


def test_a_long_error_text_keeps_its_start_and_its_end() -> None:
    reason = "Traceback (most recent call last):\n" + "  frame\n" * 1000 + "RuntimeError: the real cause"
    short = truncated(reason)
    assert len(short) <= MAX_REASON_CHARS + len(" [...] ")
    assert short.startswith("Traceback") and short.endswith("RuntimeError: the real cause")
    assert truncated("short") == "short"


class SilentGrid(ClientsGrid):
    """Node 2 never answers: its reply is missing when the round's timeout ends."""

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None) -> list[Message]:
        return [self.answer(message) for message in messages if message.metadata.dst_node_id != 2]


def test_a_node_without_a_reply_by_the_timeout_counts_as_failed_and_the_others_aggregate(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "run", {}, seed=0)
    strategy = Recorded(FedAvg(fraction_evaluate=0.0, min_available_nodes=1), folder)
    initial = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    result = strategy.start(SilentGrid(3, trained), initial, num_rounds=1, timeout=0.1)  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.arrays["w"].numpy(), np.ones(3))
    assert strategy.failure_log == [
        {"round": 1, "stage": "train", "node_id": 2, "code": ErrorCode.REPLY_MESSAGE_UNAVAILABLE, "reason": "timeout"}
    ]


def test_a_checkpoint_restored_into_a_new_recorder_continues_as_the_uninterrupted_run(tmp_path: Path) -> None:
    # The API of a user's own ServerApp: RunFolder.resume + RoundCheckpoint.load + Recorded.restore.
    initial = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    config = {"rounds": 3}

    def momentum() -> FedAvgM:  # the server momentum is state the checkpoint must carry
        return FedAvgM(fraction_evaluate=0.0, min_available_nodes=1, server_momentum=0.9)

    reference = Recorded(momentum(), RunFolder(tmp_path, "reference", config, seed=0))
    expected = reference.start(ClientsGrid(2, trained), initial, num_rounds=3)  # type: ignore[arg-type]

    stopped = RunFolder(tmp_path, "run", config, seed=0)
    Recorded(momentum(), stopped).start(ClientsGrid(2, trained), initial, num_rounds=2)  # type: ignore[arg-type]
    stopped.resumable = True  # as if killed after round 2: the folder keeps its checkpoint

    folder = RunFolder.resume(tmp_path, "run", config)
    checkpoint = RoundCheckpoint.load(folder.path)
    checkpoint.check_config(config, folder.path)
    recorded = Recorded(momentum(), folder)
    recorded.restore(checkpoint)
    result = recorded.start(ClientsGrid(2, trained), initial, num_rounds=3)  # type: ignore[arg-type]
    assert checkpoint.server_round == 2
    assert result.arrays["w"].numpy().tobytes() == expected.arrays["w"].numpy().tobytes()
    assert [row["round"] for row in folder.rounds] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="differing keys: 'rounds': 3 -> 4"):
        checkpoint.check_config({"rounds": 4}, folder.path)


def test_a_checkpoint_takes_arrays_that_are_views_of_a_transport_buffer(tmp_path: Path) -> None:
    # In a deployment Flower's received arrays are memoryviews, which plain pickle refuses.
    array = Array(np.arange(6, dtype=np.float32))
    array.__dict__["data"] = memoryview(bytes(array.data))
    record = ArrayRecord()
    record["w"] = array
    RoundCheckpoint(1, {}, config_hash({}), record, Result(), FedAvg(), {}, [], {}, 0.0).save(tmp_path)
    np.testing.assert_array_equal(RoundCheckpoint.load(tmp_path).arrays["w"].numpy(), np.arange(6))
