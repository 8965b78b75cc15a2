"""RecordedFedAvg: failed clients are counted and reported, the round goes on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.results import RunFolder
from flwr_privshare.strategies import RecordedFedAvg


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def reply(weights: np.ndarray, examples: int) -> Message:
    instruction = Message(content=RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN)
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
    strategy = RecordedFedAvg(RunFolder(tmp_path, "run", {}, seed=0), min_train_nodes=1, min_available_nodes=1)
    arrays, metrics = strategy.aggregate_train(
        1, [reply(np.full(3, 1.0, np.float32), 10), failure(), reply(np.full(3, 4.0, np.float32), 30)]
    )
    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["w"].numpy(), np.full(3, 3.25))  # (1*10 + 4*30) / 40
    assert strategy.failures == {1: 1}
    wire = strategy.wire_log[0]["replies"]
    assert len(wire) == 2 and all(set(r) == {"arrays", "metrics"} for r in wire)


def test_a_round_where_every_client_fails_keeps_the_model(tmp_path: Path) -> None:
    strategy = RecordedFedAvg(RunFolder(tmp_path, "run", {}, seed=0), min_train_nodes=1, min_available_nodes=1)
    arrays, metrics = strategy.aggregate_train(2, [failure(), failure()])
    assert arrays is None and metrics is None and strategy.failures == {2: 2}


def test_aggregation_does_not_depend_on_arrival_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(1000).astype(np.float32) for _ in range(5)]
    results = []
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1]):
        strategy = RecordedFedAvg(RunFolder(tmp_path, f"run{order[0]}", {}, seed=0), min_available_nodes=1)
        arrays, _ = strategy.aggregate_train(1, [reply(values[i], 7 + 3 * i) for i in order])
        assert arrays is not None
        results.append(arrays["w"].numpy())
    assert np.array_equal(results[0], results[1])
