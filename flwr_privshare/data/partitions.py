"""Partitions: the public split for the server, and each client's rows, from the one run seed.

The training split is first shuffled with the run seed; a public split (for the server,
oracles and attackers) is cut from its head and the clients share the rest, so the public
split is disjoint from every client. Client partitions come from flwr-datasets
partitioners, addressed by partition id and seeded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .datasets import LABEL_COLUMN, DataError, ImageDataset, load_split

if TYPE_CHECKING:
    from ..config.common import CommonSection

PARTITIONERS = ("iid", "dirichlet")


def split_public(num_rows: int, public_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(num_rows)`` with ``seed``; return ``(public, private)`` row indices."""
    if not 0 <= public_size < num_rows:
        raise DataError(f"public-size must be in [0, {num_rows}), got {public_size}")
    order = np.random.default_rng(seed).permutation(num_rows)
    return order[:public_size], order[public_size:]


def partition_rows(
    labels: torch.Tensor,
    rows: np.ndarray,
    *,
    partitioner: str,
    num_partitions: int,
    partition_id: int,
    seed: int,
    dirichlet_alpha: float = 0.5,
) -> np.ndarray:
    """The ``rows`` (indices into ``labels``) that belong to ``partition_id``, via flwr-datasets.

    Args:
        labels: labels of the whole split.
        rows: candidate rows, already shuffled with the run seed (``IidPartitioner`` cuts
            contiguous shards of the rows as given).
        partitioner: "iid" or "dirichlet" (``DirichletPartitioner`` over the labels).
    """
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

    if partitioner not in PARTITIONERS:
        raise DataError(f"partitioner must be one of {PARTITIONERS}, got {partitioner!r}")
    if not 0 <= partition_id < num_partitions:
        raise DataError(f"partition id {partition_id} is outside [0, {num_partitions})")
    impl: Partitioner
    if partitioner == "iid":
        impl = IidPartitioner(num_partitions=num_partitions)
    else:
        impl = DirichletPartitioner(
            num_partitions=num_partitions, partition_by=LABEL_COLUMN, alpha=dirichlet_alpha, seed=seed
        )
    impl.dataset = Dataset.from_dict({LABEL_COLUMN: labels[rows].tolist(), "row": rows.tolist()})
    return np.asarray(impl.load_partition(partition_id)["row"], dtype=np.int64)


def client_rows(common: CommonSection, partition_id: int, num_partitions: int) -> np.ndarray:
    """Indices into the training split of ``partition_id``'s rows, capped at ``samples-per-client``."""
    train_split = load_split(common.dataset, "train", common.data_dir)
    _, private_rows = split_public(len(train_split), common.public_size, common.seed)
    rows = partition_rows(
        train_split.labels,
        private_rows,
        partitioner=common.partitioner,
        num_partitions=num_partitions,
        partition_id=partition_id,
        seed=common.seed,
        dirichlet_alpha=common.dirichlet_alpha,
    )
    return rows[: common.samples_per_client] if common.samples_per_client > 0 else rows


def client_partition(common: CommonSection, partition_id: int, num_partitions: int) -> ImageDataset:
    """The plain training rows of ``partition_id`` (never the public split), capped at ``samples-per-client``."""
    train_split = load_split(common.dataset, "train", common.data_dir)
    return train_split.subset(client_rows(common, partition_id, num_partitions))


def public_split(common: CommonSection) -> ImageDataset:
    """The server's public rows of the training split (disjoint from every client)."""
    train_split = load_split(common.dataset, "train", common.data_dir)
    public_rows, _ = split_public(len(train_split), common.public_size, common.seed)
    return train_split.subset(public_rows)
