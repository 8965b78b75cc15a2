"""A strategy wrapper that records every round into a run folder.

``Recorded(strategy, run_folder)`` wraps any Flower strategy (FedAvg, FedProx, a DP wrapper,
...) the way Flower's DP wrappers do, and adds what an experiment needs:

- each round, one ``rounds.csv`` row with the central metrics of ``evaluate_fn``, the
  aggregated client train metrics (prefixed ``train_``, unless a key already starts with
  it) and evaluate metrics (prefixed ``evaluate_`` likewise), the replies and failures
  received and the payload bytes per client (the pattern of Flower's
  ``examples/advanced-pytorch``, which overrides ``start`` to save results);
- ``participation.json``: which partitions' clients trained in each round (the
  ``partition-id`` of every train reply without an error, when the clients report it):
  the ground truth of membership inference when clients are sampled;
- ``wire.json``: every reply received, train and evaluate, described record by record
  (keys, shapes, dtypes, bytes), and every error reply with its code and reason, for
  privacy audits;
- a round in which no reply could be aggregated keeps the global model as it was (Flower's
  ``Result`` would otherwise end with no arrays at all when no round aggregated);
- failure counts: Flower drops replies that carry an error and logs them; they are also
  counted per round (``failures``) so the run can report them;
- a content-determined reply order: Flower hands replies over in arrival order, and
  floating-point sums in another order differ in the last bits, which would make two runs
  with the same seed diverge.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from logging import WARNING
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from flwr_privshare.protocol import PARTITION_ID
from flwr_privshare.results import RunFolder
from flwr_privshare.wire import describe_content


def in_content_order(replies: Iterable[Message]) -> list[Message]:
    """The replies sorted by a digest of their arrays: an order that does not depend on arrival.

    Floating-point sums in another order differ in the last bits, which would make two runs
    with the same seed diverge; every aggregation of this package sees replies in this order.
    """
    return sorted(replies, key=_content_digest)


def _content_digest(message: Message) -> str:
    """A digest of a reply's arrays (empty for an error reply), used only for ordering."""
    digest = hashlib.sha256()
    if not message.has_error():
        for record in message.content.array_records.values():
            for name, array in record.items():
                digest.update(name.encode())
                digest.update(array.data)
    return digest.hexdigest()


class Recorded(Strategy):
    """Record the rounds of ``strategy`` into a :class:`~flwr_privshare.results.RunFolder`.

    Parameters
    ----------
    strategy : Strategy
        The strategy that does the work; every call is delegated to it.
    run_folder : RunFolder
        Receives one ``rounds.csv`` row per round (round 0 is the initial model) and
        ``wire.json``. The caller finishes the folder (summary and plots) after
        :meth:`start` returns.

    Attributes
    ----------
    failures : dict[int, int]
        Failed replies per round.
    """

    def __init__(self, strategy: Strategy, run_folder: RunFolder) -> None:
        self.strategy = strategy
        self.run_folder = run_folder
        self.failures: dict[int, int] = {}
        self._replies: dict[int, int] = {}
        self._train_metrics: dict[int, MetricRecord] = {}
        self._evaluate_metrics: dict[int, MetricRecord] = {}
        self._payload_bytes: dict[int, float] = {}
        self.wire_log: list[dict[str, Any]] = []
        self.participation: dict[str, list[int]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to the wrapped strategy."""
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to the wrapped strategy."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Describe the replies in ``wire.json``, then let the wrapped strategy aggregate them."""
        replies = in_content_order(replies)
        if replies:
            self._log_wire(server_round, "evaluate", replies)
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        if metrics is not None:
            self._evaluate_metrics[server_round] = metrics
        return metrics

    def _log_wire(self, server_round: int, stage: str, replies: list[Message]) -> list[dict[str, Any]]:
        """Append the round's replies (described, or the error they carry) to ``wire.json``; return the described."""
        received = [describe_content(msg.content) for msg in replies if not msg.has_error()]
        errors = [{"code": msg.error.code, "reason": msg.error.reason} for msg in replies if msg.has_error()]
        entry: dict[str, Any] = {"round": server_round, "stage": stage, "replies": received}
        if errors:
            entry["errors"] = errors
        self.wire_log.append(entry)
        self.run_folder.write_json("wire.json", self.wire_log)
        return received

    def _record_participation(self, server_round: int, replies: list[Message]) -> None:
        """Add the round's partition ids to ``participation.json`` (nothing when no reply reports one)."""
        partitions = sorted(
            int(cast(int, record[PARTITION_ID]))
            for msg in replies
            for record in msg.content.metric_records.values()
            if PARTITION_ID in record
        )
        if partitions:
            self.participation[str(server_round)] = partitions
            self.run_folder.write_json("participation.json", self.participation)

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.strategy.summary()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Order, count and describe the replies, then let the wrapped strategy aggregate them."""
        replies = in_content_order(replies)
        failed = [msg for msg in replies if msg.has_error()]
        self.failures[server_round] = len(failed)
        self._replies[server_round] = len(replies) - len(failed)
        received = self._log_wire(server_round, "train", replies)
        self._record_participation(server_round, [msg for msg in replies if not msg.has_error()])
        self._payload_bytes[server_round] = sum(
            sum(entry["bytes"] for entry in reply.values()) for reply in received
        ) / max(len(received), 1)
        if failed:
            log(WARNING, "round %d: %d of %d clients failed", server_round, len(failed), len(replies))
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if metrics is not None:
            self._train_metrics[server_round] = metrics
        return arrays, metrics

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run the rounds as :meth:`flwr.serverapp.strategy.Strategy.start` does, recording each one."""
        started = time.monotonic()

        def record(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            central = evaluate_fn(server_round, arrays) if evaluate_fn is not None else None
            row: dict[str, Any] = {"round": server_round, "elapsed_s": round(time.monotonic() - started, 3)}
            row.update(dict(central or {}))
            row.update(_prefixed("train_", self._train_metrics.get(server_round, MetricRecord())))
            row.update(_prefixed("evaluate_", self._evaluate_metrics.get(server_round, MetricRecord())))
            if server_round > 0:
                row["train_replies"] = self._replies.get(server_round, 0)
                row["train_failures"] = self.failures.get(server_round, 0)
                row["payload_bytes_per_client"] = self._payload_bytes.get(server_round, 0.0)
            self.run_folder.add_round(row)
            return central

        result = super().start(
            grid,
            initial_arrays,
            num_rounds=num_rounds,
            timeout=timeout,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=record,
        )
        if not result.arrays:  # no round aggregated anything: the model is the initial one
            result.arrays = initial_arrays
        return result


def _prefixed(prefix: str, metrics: MetricRecord) -> dict[str, Any]:
    """``{prefix + key: value}``, leaving keys that already start with ``prefix`` as they are."""
    return {(key if key.startswith(prefix) else prefix + key): value for key, value in metrics.items()}
