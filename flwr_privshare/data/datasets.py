"""Image data: a Hugging Face hub id or a local folder of parquet files, decoded once.

Images are decoded once per process into a ``uint8`` ``(N, C, H, W)`` tensor and cached on
disk, keyed by a hash of the parquet file (local) or the dataset fingerprint (hub), so the
next process loads the cache in a fraction of a second instead of decoding 50k JPEGs.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from ..results import atomic_torch_save

IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMN = "label"
CACHE_ENV = "FLWR_PRIVSHARE_CACHE"
UNSPLIT_FILE = "all.parquet"  # the one file of a data set without a fixed train/test split
UNSPLIT_TEST_SHARE = 0.2  # of every class, for such a data set


class DataError(ValueError):
    """A data set, folder or partitioning request that cannot be served."""


@dataclass(frozen=True)
class ImageDataset:
    """Decoded images and labels.

    Attributes:
        images: ``(N, C, H, W)`` uint8.
        labels: ``(N,)`` int64.
        num_classes: number of classes of the full data set.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        channels, height, width = self.images.shape[1:]
        return int(channels), int(height), int(width)

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageDataset:
        """The rows ``indices`` (a copy)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageDataset(self.images[index], self.labels[index], self.num_classes)

    def head(self, count: int) -> ImageDataset:
        """The first ``count`` rows (all when ``count`` is 0 or exceeds the size)."""
        if count <= 0 or count >= len(self):
            return self
        return ImageDataset(self.images[:count], self.labels[:count], self.num_classes)


def cache_dir() -> Path:
    """Where decoded data sets are cached: ``$FLWR_PRIVSHARE_CACHE`` or ``~/.cache/flwr-privshare``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "flwr-privshare"))


def local_split_path(data_dir: str, split: str) -> Path:
    """``<data_dir>/<split>.parquet``, with a clear error when it is missing."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"data-dir {data_dir!r} is not a folder; expected a folder with train.parquet and test.parquet")
    path = folder / f"{split}.parquet"
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.parquet")) or "no parquet files"
        raise DataError(
            f"data-dir {data_dir!r} has no {split}.parquet (found: {present}); expected train.parquet and "
            f"test.parquet in the Hugging Face hub's schema, or one {UNSPLIT_FILE} to split per class"
        )
    return path


def load_split(dataset: str, split: str, data_dir: str = "") -> ImageDataset:
    """Load ``split`` ("train" or "test") from ``data_dir`` when set, else from the hub id ``dataset``.

    A folder that holds only ``all.parquet`` (a data set without a fixed split, such as the
    AT&T faces) is split per class by :func:`split_per_class`. Decoding happens once per
    process and once per machine (on-disk cache).
    """
    if data_dir:
        folder = Path(data_dir).expanduser()
        unsplit = folder / UNSPLIT_FILE
        if not (folder / f"{split}.parquet").is_file() and unsplit.is_file() and split in ("train", "test"):
            whole = _load_cached(_file_digest(str(unsplit)), lambda: pq.read_table(unsplit))
            return split_per_class(whole)[split]
        path = local_split_path(data_dir, split)
        return _load_cached(_file_digest(str(path)), lambda: pq.read_table(path))
    return _load_hub_split(dataset, split)


def split_per_class(data: ImageDataset, test_share: float = UNSPLIT_TEST_SHARE) -> dict[str, ImageDataset]:
    """``{"train", "test"}`` of a data set without a fixed split: the first ``ceil(test_share * n_c)`` rows of
    every class ``c`` (in file order) are its test rows, the rest its training rows.

    No seed is involved: the split is a property of the file, like a data set's official split,
    so every run and every attack on it sees the same test set (the offline files' rows are
    shuffled once, so the first rows of a class are a fair sample of it).
    """
    rank = torch.zeros(len(data), dtype=torch.int64)
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    for label in range(data.num_classes):  # one pass per class, not per row
        rows = torch.nonzero(data.labels == label).flatten()
        rank[rows] = torch.arange(len(rows))
    is_test = rank < torch.ceil(counts[data.labels].double() * test_share).long()
    return {
        "train": data.subset(torch.nonzero(~is_test).flatten()),
        "test": data.subset(torch.nonzero(is_test).flatten()),
    }


def _load_hub_split(dataset: str, split: str) -> ImageDataset:
    """Load from the Hugging Face hub (network or the local hub cache)."""
    from datasets import load_dataset

    hub = load_dataset(dataset, split=split)
    key = hashlib.sha256(f"{dataset}:{split}:{hub._fingerprint}".encode()).hexdigest()
    return _load_cached(key, lambda: hub.data.table)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_MEMORY_CACHE: dict[str, ImageDataset] = {}


def _load_cached(key: str, read_table: Callable[[], pa.Table]) -> ImageDataset:
    """Return the decoded data set for ``key`` from memory, or memory-mapped from the disk cache (decoding
    ``read_table()`` into it first if needed).

    Memory-mapped, the decoded images are one copy in the page cache shared by every process of the
    machine (the ServerApp and every Ray actor), not one copy per process.
    """
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = cache_dir() / f"{key}.pt"
    if not path.is_file():
        decoded = decode_table(read_table())
        atomic_torch_save(
            {"images": decoded.images, "labels": decoded.labels, "num_classes": decoded.num_classes}, path
        )
    stored = torch.load(path, weights_only=True, mmap=True)
    data = ImageDataset(stored["images"], stored["labels"], int(stored["num_classes"]))
    _MEMORY_CACHE[key] = data
    return data


def decode_table(table: pa.Table) -> ImageDataset:
    """Decode an arrow table in the hub's image schema (``img``/``image`` + ``label``)."""
    column = next((name for name in IMAGE_COLUMNS if name in table.column_names), None)
    if column is None or LABEL_COLUMN not in table.column_names:
        raise DataError(
            f"expected an image column {IMAGE_COLUMNS} and a {LABEL_COLUMN!r} column, found {table.column_names}"
        )
    encoded = table.column(column).combine_chunks().field("bytes").to_pylist()
    arrays = [np.asarray(Image.open(io.BytesIO(blob))) for blob in encoded]
    stacked = np.stack(arrays)
    images = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    labels = torch.tensor(table.column(LABEL_COLUMN).to_numpy(), dtype=torch.int64)
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)), labels, _num_classes(table, labels))


def _num_classes(table: pa.Table, labels: torch.Tensor) -> int:
    """Class count from the hub's ClassLabel metadata, else ``max(label) + 1``."""
    metadata = (table.schema.metadata or {}).get(b"huggingface")
    if metadata:
        features = json.loads(metadata).get("info", {}).get("features", {})
        names = features.get(LABEL_COLUMN, {}).get("names")
        if names:
            return len(names)
    return int(labels.max()) + 1
