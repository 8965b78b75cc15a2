"""FedAvg that records every round into a run folder, with central evaluation and failure counts.

Flower's ``FedAvg`` (McMahan et al., 2017, https://arxiv.org/abs/1602.05629) already drops
replies that carry an error and logs them. ``RecordedFedAvg`` also *counts* them per round,
and wraps the central ``evaluate_fn`` so that after each round one row with the central
metrics, the aggregated client metrics and the failures goes to ``rounds.csv`` (the
pattern of Flower's ``examples/advanced-pytorch``, which overrides ``start`` to save
results). It is a drop-in ``FedAvg`` for any ServerApp.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from flwr_privshare.results import RunFolder
from flwr_privshare.wire import describe_content


def _content_digest(message: Message) -> str:
    """A digest of a reply's arrays (empty for an error reply), used only for ordering."""
    digest = hashlib.sha256()
    if not message.has_error():
        for record in message.content.array_records.values():
            for name, array in record.items():
                digest.update(name.encode())
                digest.update(array.data)
    return digest.hexdigest()


class RecordedFedAvg(FedAvg):
    """FedAvg whose rounds are written to a :class:`~flwr_privshare.results.RunFolder`.

    Parameters
    ----------
    run_folder : RunFolder
        Receives one ``rounds.csv`` row per round (round 0 is the initial model).
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg` (``fraction_train``,
        ``min_train_nodes``, ...).

    Notes
    -----
    Each row holds ``round``, ``elapsed_s``, the central metrics returned by
    ``evaluate_fn``, the aggregated client training metrics prefixed ``train_`` and
    ``train_replies`` / ``train_failures`` / ``payload_bytes_per_client``; ``wire.json``
    describes every reply received (records, keys, shapes, dtypes, bytes). The caller
    finishes the folder (summary and plots) after :meth:`start` returns; ``failures``
    holds the per-round failure counts.
    """

    def __init__(self, run_folder: RunFolder, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.run_folder = run_folder
        self.failures: dict[int, int] = {}
        self._replies: dict[int, int] = {}
        self._train_metrics: dict[int, MetricRecord] = {}
        self._payload_bytes: dict[int, float] = {}
        self.wire_log: list[dict[str, Any]] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Count failed replies, then aggregate the others as FedAvg does.

        Replies are put in a content-determined order first: Flower hands them over in
        arrival order, and floating-point sums in a different order differ in the last
        bits, which would make two runs with the same seed diverge.
        """
        replies = sorted(replies, key=_content_digest)
        failed = [msg for msg in replies if msg.has_error()]
        self.failures[server_round] = len(failed)
        self._replies[server_round] = len(replies) - len(failed)
        received = [describe_content(msg.content) for msg in replies if not msg.has_error()]
        self._payload_bytes[server_round] = sum(
            sum(entry["bytes"] for entry in reply.values()) for reply in received
        ) / max(len(received), 1)
        self.wire_log.append({"round": server_round, "replies": received})
        self.run_folder.write_json("wire.json", self.wire_log)
        if failed:
            log(WARNING, "round %d: %d of %d clients failed", server_round, len(failed), len(replies))
        arrays, metrics = super().aggregate_train(server_round, replies)
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
        """Run FedAvg as :meth:`flwr.serverapp.strategy.Strategy.start` does, recording each round."""
        started = time.monotonic()

        def record(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            central = evaluate_fn(server_round, arrays) if evaluate_fn is not None else None
            row: dict[str, Any] = {"round": server_round, "elapsed_s": round(time.monotonic() - started, 3)}
            row.update(dict(central or {}))
            row.update({f"train_{k}": v for k, v in self._train_metrics.get(server_round, {}).items()})
            if server_round > 0:
                row["train_replies"] = self._replies.get(server_round, 0)
                row["train_failures"] = self.failures.get(server_round, 0)
                row["payload_bytes_per_client"] = self._payload_bytes.get(server_round, 0.0)
            self.run_folder.add_round(row)
            return central

        return super().start(
            grid,
            initial_arrays,
            num_rounds=num_rounds,
            timeout=timeout,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=record,
        )
