"""Partitions: the public split for the server, and each client's rows, from the one run seed.

The training split is first shuffled with the run seed; a public split (for the server,
oracles and attackers) is cut from its head and the clients share the rest, so the public
split is disjoint from every client. Client partitions come from flwr-datasets
partitioners, addressed by partition id and seeded.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .datasets import LABEL_COLUMN, DataError, ImageDataset, load_split

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

    from ..config.common import CommonSection

PARTITIONERS = ("iid", "dirichlet")


def split_public(num_rows: int, public_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(num_rows)`` with ``seed``; return ``(public, private)`` row indices."""
    if not 0 <= public_size < num_rows:
        raise DataError(f"public-size must be in [0, {num_rows}), got {public_size}")
    order = np.random.default_rng(seed).permutation(num_rows)
    return order[:public_size], order[public_size:]


def build_partitioner(
    labels: torch.Tensor,
    rows: np.ndarray,
    *,
    partitioner: str,
    num_partitions: int,
    seed: int,
    dirichlet_alpha: float = 0.5,
) -> Partitioner:
    """The flwr-datasets partitioner of ``rows`` (indices into ``labels``), its data set assigned.

    Args:
        labels: labels of the whole split.
        rows: candidate rows, already shuffled with the run seed (``IidPartitioner`` cuts
            contiguous shards of the rows as given).
        partitioner: "iid" or "dirichlet" (``DirichletPartitioner`` over the labels).
    """
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    if partitioner not in PARTITIONERS:
        raise DataError(f"partitioner must be one of {PARTITIONERS}, got {partitioner!r}")
    impl: Partitioner
    if partitioner == "iid":
        impl = IidPartitioner(num_partitions=num_partitions)
    else:
        impl = DirichletPartitioner(
            num_partitions=num_partitions, partition_by=LABEL_COLUMN, alpha=dirichlet_alpha, seed=seed
        )
    impl.dataset = Dataset.from_dict({LABEL_COLUMN: labels[rows].tolist(), "row": rows.tolist()})
    return impl


def _check_partition_id(partition_id: int, num_partitions: int) -> None:
    if not 0 <= partition_id < num_partitions:
        raise DataError(f"partition id {partition_id} is outside [0, {num_partitions})")


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
    """The ``rows`` (indices into ``labels``) that belong to ``partition_id``, via flwr-datasets
    (see :func:`build_partitioner`)."""
    _check_partition_id(partition_id, num_partitions)
    impl = build_partitioner(
        labels, rows, partitioner=partitioner, num_partitions=num_partitions, seed=seed, dirichlet_alpha=dirichlet_alpha
    )
    return rows_of_partition(impl, partition_id)


def rows_of_partition(impl: Partitioner, partition_id: int) -> np.ndarray:
    """The ``row`` column of ``impl``'s partition ``partition_id``.

    ``IidPartitioner.load_partition`` is ``Dataset.shard(num_partitions, i, contiguous=True)``:
    a new Dataset with a hashed fingerprint per call, which cost more than the rest of a client
    call at 1,000 clients. Its shards are contiguous runs of the rows, the first
    ``len % num_partitions`` one row longer: exactly ``np.array_split``'s cut, made once per
    partitioner (``tests/test_data.py`` checks it against ``load_partition``). Other
    partitioners go through ``load_partition`` (the column through Arrow).
    """
    from flwr_datasets.partitioner import IidPartitioner

    if isinstance(impl, IidPartitioner):
        return _contiguous_shards(impl)[partition_id]
    return impl.load_partition(partition_id).with_format("arrow")["row"].to_numpy().astype(np.int64)


@functools.lru_cache(maxsize=4)
def _contiguous_shards(impl: Partitioner) -> list[np.ndarray]:
    rows = impl.dataset.with_format("arrow")["row"].to_numpy().astype(np.int64)
    return np.array_split(rows, impl.num_partitions)


@functools.lru_cache(maxsize=4)
def _run_partitioner(key: tuple[Any, ...], num_partitions: int) -> Partitioner:
    """The partitioner of a run's private rows, built once per process and key (``key`` names the data set, the
    public split, the partitioner and its seed), not once per client call: a Ray actor serves many clients."""
    dataset, data_dir, public_size, seed, partitioner, dirichlet_alpha = key
    train_split = load_split(dataset, "train", data_dir)
    _, private_rows = split_public(len(train_split), public_size, seed)
    return build_partitioner(
        train_split.labels,
        private_rows,
        partitioner=partitioner,
        num_partitions=num_partitions,
        seed=seed,
        dirichlet_alpha=dirichlet_alpha,
    )


def client_rows(common: CommonSection, partition_id: int, num_partitions: int) -> np.ndarray:
    """Indices into the training split of ``partition_id``'s rows, capped at ``samples-per-client``."""
    _check_partition_id(partition_id, num_partitions)
    key = (common.dataset, common.data_dir, common.public_size, common.seed, common.partitioner, common.dirichlet_alpha)
    rows = rows_of_partition(_run_partitioner(key, num_partitions), partition_id)
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
