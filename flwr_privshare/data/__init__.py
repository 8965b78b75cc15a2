"""Image data sets (hub id or local parquet folder, decoded once and cached) and their partitions."""

from .datasets import DataError, ImageDataset, cache_dir, load_split
from .partitions import PARTITIONERS, client_partition, client_rows, partition_rows, public_split, split_public

__all__ = [
    "PARTITIONERS",
    "DataError",
    "ImageDataset",
    "cache_dir",
    "client_partition",
    "client_rows",
    "load_split",
    "partition_rows",
    "public_split",
    "split_public",
]
