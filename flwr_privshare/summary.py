"""The typed ``summary.json`` of a run: headline fields, then one privacy section per protection and attack.

Every app builds its summary as a :class:`RunSummary`; benchmarks and studies read it back
with :func:`load_summary` instead of indexing raw JSON. ``docs/results.md`` documents the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunSummary:
    """What ``summary.json`` holds.

    Attributes:
        method: the algorithm and protections, e.g. ``fedavg+visualmixer`` or ``dp-fedavg``.
        protection: the ``protection`` value as given (``"none"``, ``"visualmixer,dp-sgd"``, ``"dpm"``).
        dataset: the data folder or hub id.
        final_accuracy: accuracy of the final global model on the primary test set (the
            protected view when a protection changes the test images).
        num_rounds: federated rounds.
        num_clients: SuperNodes in the federation.
        client_failures: failed, withheld or timed-out replies over the run.
        failed_clients: every client with a failed reply: ``node_id``, ``partition_id`` (when
            known from its other replies) and ``failures``; the reasons are in ``failures.json``.
        seed: the run seed.
        wall_time_s: seconds from the ServerApp's start to the summary.
        privacy: ``{protection or attack name: its report}``; a DP section states
            ``epsilon`` and ``delta``.
        details: the app's further headline values (for example ``final_plain_accuracy``),
            written at the top level of the file.
    """

    method: str
    protection: str
    dataset: str
    final_accuracy: float
    num_rounds: int
    num_clients: int
    client_failures: int
    seed: int
    wall_time_s: float
    failed_clients: list[dict[str, Any]] = field(default_factory=list)
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def dp(self) -> dict[str, Any] | None:
        """The section that states a DP guarantee (``epsilon`` and ``delta``), if any."""
        return next((section for section in self.privacy.values() if "epsilon" in section), None)

    @property
    def epsilon(self) -> float | None:
        """The run's epsilon, when a protection gives a DP guarantee."""
        return None if self.dp is None else self.dp["epsilon"]

    @property
    def delta(self) -> float | None:
        """The delta of :attr:`epsilon`."""
        return None if self.dp is None else self.dp["delta"]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``summary.json``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "details"}
        return {**fields, **self.details, "epsilon": self.epsilon, "delta": self.delta}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunSummary:
        """The inverse of :meth:`to_json`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"details"}
        details = {key: value for key, value in obj.items() if key not in names | {"epsilon", "delta"}}
        return cls(**{key: obj[key] for key in names if key in obj}, details=details)


def load_summary(run_folder: str | Path) -> RunSummary:
    """The summary of a finished run folder."""
    return RunSummary.from_json(json.loads((Path(run_folder) / "summary.json").read_text()))
