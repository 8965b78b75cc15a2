"""A protected partition kept in the client's ``context.state`` between rounds.

A data protection (VisualMixer, MDP) transforms the client's partition once, in its first round,
and trains on the result every round after. ``context.state`` lives on the client (the SuperNode
or the simulation's node state) and is never sent, so the transformed images, and everything the
transformation was derived from, stay on the client.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, MetricRecord

from ..data import ImageDataset


def data_key(name: str) -> str:
    """The ``context.state`` key of protection ``name``'s partition (its metrics go under ``<name>-metrics``)."""
    return f"{name}-data"


def kept_data(context: Context, name: str) -> tuple[ImageDataset, dict[str, float]] | None:
    """The partition and metrics protection ``name`` stored with :func:`keep_data`, or ``None`` on its first round."""
    if data_key(name) not in context.state:
        return None
    stored = context.state.array_records[data_key(name)]
    data = ImageDataset(
        torch.from_numpy(stored["images"].numpy()),
        torch.from_numpy(stored["labels"].numpy()),
        int(stored["num-classes"].numpy()),
    )
    metrics = context.state.metric_records[f"{name}-metrics"]
    return data, {key: float(cast(float, value)) for key, value in metrics.items()}


def keep_data(context: Context, name: str, data: ImageDataset, metrics: dict[str, float]) -> None:
    """Store protection ``name``'s partition and the metrics the client reports about it."""
    context.state[data_key(name)] = ArrayRecord(
        {
            "images": Array(data.images.numpy()),
            "labels": Array(data.labels.numpy()),
            "num-classes": Array(np.asarray(data.num_classes)),
        }
    )
    context.state[f"{name}-metrics"] = MetricRecord(dict(metrics))
