"""A strategy wrapper that records every round into a run folder, survives failed and hanging clients, and resumes.

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
  (keys, shapes, dtypes, bytes), and every error reply with its node, code and reason, for
  privacy audits;
- failures with reasons: Flower drops replies that carry an error and logs them; here every
  failed, withheld or timed-out reply is counted per round (``failures``) and kept with its
  node and reason (truncated) in ``failures.json``; :meth:`failed_clients` says which
  clients failed how often;
- hanging clients: ``timeout`` bounds each round; a node that has not answered by then gets
  an error reply with the reason ``"timeout"`` (Flower's ``REPLY_MESSAGE_UNAVAILABLE``) and
  the round aggregates the others;
- a round in which no reply could be aggregated keeps the global model as it was (Flower's
  ``Result`` would otherwise end with no arrays at all when no round aggregated);
- a checkpoint after every round (:mod:`flwr_privshare.checkpoint`), from which
  :meth:`restore` continues a killed run with the numbers of an uninterrupted one;
- a content-determined reply order: Flower hands replies over in arrival order, and
  floating-point sums in another order differ in the last bits, which would make two runs
  with the same seed diverge.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord
from flwr.common import log
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from flwr_privshare.checkpoint import RoundCheckpoint, config_hash, restore_rng_states, rng_states
from flwr_privshare.protocol import PARTITION_ID
from flwr_privshare.results import RunFolder
from flwr_privshare.wire import describe_content

#: The reason of a node that did not answer within the round's timeout.
TIMEOUT_REASON = "timeout"
#: Error texts longer than this are cut in the middle (Flower's reasons carry whole tracebacks).
MAX_REASON_CHARS = 1000
# What Recorded keeps besides the rows of the run folder; a checkpoint stores exactly these.
_BOOKKEEPING = (
    "failures",
    "failure_log",
    "node_partitions",
    "replies_received",
    "train_metrics",
    "evaluate_metrics",
    "payload_bytes",
    "wire_log",
    "participation",
)


def in_content_order(replies: Iterable[Message]) -> list[Message]:
    """The replies sorted by a digest of their arrays: an order that does not depend on arrival.

    Floating-point sums in another order differ in the last bits, which would make two runs
    with the same seed diverge; every aggregation of this package sees replies in this order.
    Error replies (no arrays) come first, ordered by node.
    """
    return sorted(replies, key=_content_digest)


def _content_digest(message: Message) -> str:
    """A digest of a reply's arrays (the node id for an error reply), used only for ordering."""
    digest = hashlib.sha256()
    if message.has_error():
        return f"!{message.metadata.src_node_id:020d}"
    for record in message.content.array_records.values():
        for name, array in record.items():
            digest.update(name.encode())
            digest.update(array.data)
    return digest.hexdigest()


def truncated(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` cut to ``limit`` characters: its start and its end (where a traceback names the error)."""
    if len(reason) <= limit:
        return reason
    head = limit // 4
    return f"{reason[:head]} [...] {reason[-(limit - head) :]}"


def timed_out(sent: list[Message], replies: list[Message]) -> list[Message]:
    """An error reply (reason ``"timeout"``) for every sent message whose node did not answer."""
    answered = {reply.metadata.src_node_id for reply in replies}
    return [
        Message(Error(code=ErrorCode.REPLY_MESSAGE_UNAVAILABLE, reason=TIMEOUT_REASON), reply_to=message)
        for message in sent
        if message.metadata.dst_node_id not in answered
    ]


class Recorded(Strategy):
    """Record the rounds of ``strategy`` into a :class:`~flwr_privshare.results.RunFolder`.

    Parameters
    ----------
    strategy : Strategy
        The strategy that does the work; every call is delegated to it.
    run_folder : RunFolder
        Receives one ``rounds.csv`` row per round (round 0 is the initial model),
        ``wire.json``, ``failures.json`` and, when ``checkpoints`` is true, ``checkpoint.pt``.
        The caller finishes the folder (summary and plots) after :meth:`start` returns.
    checkpoints : bool (default: True)
        Write a checkpoint after every round (a run that cannot resume, because its clients
        keep state that cannot be rebuilt, need not pay for them).

    Attributes
    ----------
    failures : dict[int, int]
        Failed, withheld or timed-out train replies per round.
    failure_log : list[dict]
        Every failed reply: round, stage, node, partition (when known), error code and reason.
    """

    def __init__(self, strategy: Strategy, run_folder: RunFolder, *, checkpoints: bool = True) -> None:
        self.strategy = strategy
        self.run_folder = run_folder
        self.checkpoints = checkpoints
        self.failures: dict[int, int] = {}
        self.failure_log: list[dict[str, Any]] = []
        self.node_partitions: dict[int, int] = {}
        self.replies_received: dict[int, int] = {}
        self.train_metrics: dict[int, MetricRecord] = {}
        self.evaluate_metrics: dict[int, MetricRecord] = {}
        self.payload_bytes: dict[int, float] = {}
        self.wire_log: list[dict[str, Any]] = []
        self.participation: dict[str, list[int]] = {}
        self.resumed_from: RoundCheckpoint | None = None

    # -- resuming ----------------------------------------------------------------------------------
    def restore(self, checkpoint: RoundCheckpoint) -> None:
        """Continue from ``checkpoint``: the strategy with its state, the bookkeeping, the rows and the RNGs.

        :meth:`start` then runs the rounds after ``checkpoint.server_round``. Files of the run
        folder that a killed run wrote after the checkpoint are rewritten from it.
        """
        self.strategy = checkpoint.strategy
        for name in _BOOKKEEPING:
            setattr(self, name, checkpoint.recorder[name])
        self.run_folder.rounds = []
        for row in checkpoint.rounds:
            self.run_folder.add_round(row)
        self.run_folder.write_json("wire.json", self.wire_log)
        if self.participation:
            self.run_folder.write_json("participation.json", self.participation)
        self._write_failures()
        restore_rng_states(checkpoint.rng)
        self.resumed_from = checkpoint

    def _checkpoint(self, server_round: int, arrays: ArrayRecord, result: Result, elapsed_s: float) -> None:
        config = self.run_folder.config
        RoundCheckpoint(
            server_round=server_round,
            config=dict(config),
            config_hash=config_hash(config),
            arrays=arrays,
            result=result,
            strategy=self.strategy,
            recorder={name: getattr(self, name) for name in _BOOKKEEPING},
            rounds=list(self.run_folder.rounds),
            rng=rng_states(),
            elapsed_s=elapsed_s,
        ).save(self.run_folder.path)
        self.run_folder.resumable = True

    # -- what clients sent ----------------------------------------------------------------------
    def failed_clients(self) -> list[dict[str, Any]]:
        """Every node with a failed reply: ``node_id``, ``partition_id`` (when it ever reported one), ``failures``."""
        counts = Counter(entry["node_id"] for entry in self.failure_log)
        return [
            {"node_id": node, "partition_id": self.node_partitions.get(node), "failures": count}
            for node, count in sorted(counts.items())
        ]

    def record_replies(self, server_round: int, stage: str, replies: list[Message]) -> list[dict[str, Any]]:
        """Describe replies in ``wire.json`` and log their failures; return the described replies.

        The strategy calls it for every train and evaluate round; call it for replies to messages the
        ServerApp sends itself (a protection's broadcast before round 1 is recorded as round 0).
        """
        for msg in replies:
            for record in [] if msg.has_error() else msg.content.metric_records.values():
                if PARTITION_ID in record:
                    self.node_partitions[msg.metadata.src_node_id] = int(cast(int, record[PARTITION_ID]))
        received = [describe_content(msg.content) for msg in replies if not msg.has_error()]
        errors = [
            {"node_id": msg.metadata.src_node_id, "code": msg.error.code, "reason": truncated(msg.error.reason or "")}
            for msg in replies
            if msg.has_error()
        ]
        entry: dict[str, Any] = {"round": server_round, "stage": stage, "replies": received}
        if errors:
            entry["errors"] = errors
            self.failure_log.extend({"round": server_round, "stage": stage, **error} for error in errors)
            log(WARNING, "round %d (%s): %d of %d replies failed", server_round, stage, len(errors), len(replies))
        self.wire_log.append(entry)
        self.run_folder.write_json("wire.json", self.wire_log)
        self._write_failures()  # also when a node that failed earlier has now told its partition
        return received

    def _write_failures(self) -> None:
        """``failures.json``: every failed reply, with the partition of its node where known."""
        if self.failure_log:
            self.run_folder.write_json(
                "failures.json",
                [{**entry, "partition_id": self.node_partitions.get(entry["node_id"])} for entry in self.failure_log],
            )

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

    # -- the Strategy interface -----------------------------------------------------------------
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

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Order, count and describe the replies, then let the wrapped strategy aggregate them."""
        replies = in_content_order(replies)
        failed = [msg for msg in replies if msg.has_error()]
        self.failures[server_round] = len(failed)
        self.replies_received[server_round] = len(replies) - len(failed)
        received = self.record_replies(server_round, "train", replies)
        self._record_participation(server_round, [msg for msg in replies if not msg.has_error()])
        self.payload_bytes[server_round] = sum(
            sum(entry["bytes"] for entry in reply.values()) for reply in received
        ) / max(len(received), 1)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            reasons = sorted({truncated(msg.error.reason or "", 80) for msg in failed}) or ["no client was sampled"]
            log(WARNING, "round %d: no reply aggregated (%s); the global model stays as it was", server_round,
                "; ".join(reasons))  # fmt: skip
        if metrics is not None:
            self.train_metrics[server_round] = metrics
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Describe the replies in ``wire.json``, then let the wrapped strategy aggregate them."""
        replies = in_content_order(replies)
        if replies:
            self.record_replies(server_round, "evaluate", replies)
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        if metrics is not None:
            self.evaluate_metrics[server_round] = metrics
        return metrics

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.strategy.summary()

    # -- the rounds -----------------------------------------------------------------------------
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
        """Run the rounds as :meth:`flwr.serverapp.strategy.Strategy.start` does, recording each one.

        ``timeout`` (seconds) bounds every round: nodes that have not answered by then count as
        failed with the reason ``"timeout"``. After :meth:`restore` only the rounds after the
        checkpoint's run, from its model (``initial_arrays`` is then ignored).
        """
        checkpoint = self.resumed_from
        started = time.monotonic() - (checkpoint.elapsed_s if checkpoint else 0.0)
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config

        def record(server_round: int, arrays: ArrayRecord) -> None:
            central = evaluate_fn(server_round, arrays) if evaluate_fn is not None else None
            if central is not None:
                result.evaluate_metrics_serverapp[server_round] = central
            row: dict[str, Any] = {"round": server_round, "elapsed_s": round(time.monotonic() - started, 3)}
            row.update(dict(central or {}))
            row.update(_prefixed("train_", self.train_metrics.get(server_round, MetricRecord())))
            row.update(_prefixed("evaluate_", self.evaluate_metrics.get(server_round, MetricRecord())))
            if server_round > 0:
                row["train_replies"] = self.replies_received.get(server_round, 0)
                row["train_failures"] = self.failures.get(server_round, 0)
                row["payload_bytes_per_client"] = self.payload_bytes.get(server_round, 0.0)
            self.run_folder.add_round(row)
            if self.checkpoints:
                self._checkpoint(server_round, arrays, result, time.monotonic() - started)

        if checkpoint is None:
            log(INFO, "Starting %s strategy:", type(self.strategy).__name__)
            self.summary()
            result, arrays, first = Result(), initial_arrays, 1
            result.arrays = initial_arrays
            record(0, arrays)
        else:
            result, arrays, first = checkpoint.result, checkpoint.arrays, checkpoint.server_round + 1
            log(INFO, "Resuming %s after round %d of %d", type(self.strategy).__name__, first - 1, num_rounds)
        for server_round in range(first, num_rounds + 1):
            log(INFO, "[ROUND %s/%s]", server_round, num_rounds)
            sent = list(self.configure_train(server_round, arrays, train_config, grid))
            replies = list(grid.send_and_receive(sent, timeout=timeout))
            new_arrays, train_metrics = self.aggregate_train(server_round, replies + timed_out(sent, replies))
            if new_arrays is not None:
                arrays = result.arrays = new_arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[server_round] = train_metrics
            sent = list(self.configure_evaluate(server_round, arrays, evaluate_config, grid))
            if sent:
                replies = list(grid.send_and_receive(sent, timeout=timeout))
                evaluate_metrics = self.aggregate_evaluate(server_round, replies + timed_out(sent, replies))
                if evaluate_metrics is not None:
                    result.evaluate_metrics_clientapp[server_round] = evaluate_metrics
            record(server_round, arrays)
        for line in io.StringIO(str(result)):
            log(INFO, "\t%s", line.rstrip("\n"))
        return result


def _prefixed(prefix: str, metrics: MetricRecord) -> dict[str, Any]:
    """``{prefix + key: value}``, leaving keys that already start with ``prefix`` as they are."""
    return {(key if key.startswith(prefix) else prefix + key): value for key, value in metrics.items()}
