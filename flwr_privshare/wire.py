"""Describe what a message carries, for payload accounting and privacy audits.

``describe_content`` lists every record of a reply with its keys, array shapes and dtypes
and its size in bytes. The strategies store this for the replies they receive
(``wire.json`` in the run folder), so a test or a reviewer can check on a real run that
nothing but model arrays and scalar metrics left the clients.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict


def describe_content(content: RecordDict) -> dict[str, Any]:
    """``{record name: {"type", "entries", "bytes"}}`` for every record of ``content``.

    Array records list ``{name: {"shape", "dtype"}}``; metric and config records list
    ``{key: value type}``.
    """
    described: dict[str, Any] = {}
    for name, record in content.array_records.items():
        entries = {key: {"shape": list(array.shape), "dtype": array.dtype} for key, array in record.items()}
        described[name] = {
            "type": "array",
            "entries": entries,
            "bytes": sum(len(a.data) for a in record.values()),
        }
    scalar_records: list[tuple[str, str, MetricRecord | ConfigRecord]]
    scalar_records = [("metric", name, record) for name, record in content.metric_records.items()]
    scalar_records += [("config", name, record) for name, record in content.config_records.items()]
    for kind, name, scalars in scalar_records:
        types = {key: type(value).__name__ for key, value in scalars.items()}
        described[name] = {"type": kind, "entries": types, "bytes": scalars.count_bytes()}
    return described
