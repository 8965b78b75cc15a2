"""Data loading from a local parquet folder, caching and seeded partitions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flwr_privshare.data import DataError, load_split, partition_rows, split_public


def test_cifar_and_mnist_load_through_the_same_code(data_root: Path) -> None:
    cifar = load_split("uoft-cs/cifar10", "test", str(data_root / "cifar10"))
    mnist = load_split("ylecun/mnist", "test", str(data_root / "mnist"))
    assert cifar.images.shape == (10_000, 3, 32, 32) and cifar.images.dtype == torch.uint8
    assert mnist.images.shape == (10_000, 1, 28, 28) and mnist.image_shape == (1, 28, 28)
    assert cifar.num_classes == mnist.num_classes == 10
    assert set(cifar.labels.unique().tolist()) == set(range(10))
    assert 100 < float(cifar.images.float().mean()) < 140  # real photographs, not zeros


def test_decoding_is_cached_on_disk(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr_privshare.data.datasets as data

    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(data, "_MEMORY_CACHE", {})
    first = load_split("", "test", str(data_root / "mnist"))
    assert len(list(tmp_path.glob("*.pt"))) == 1
    monkeypatch.setattr(data, "_MEMORY_CACHE", {})
    monkeypatch.setattr(data, "decode_table", lambda table: pytest.fail("decoded twice"))
    second = load_split("", "test", str(data_root / "mnist"))
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_missing_files_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        load_split("", "train", str(tmp_path / "nowhere"))
    (tmp_path / "train.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"has no test.parquet \(found: \['train.parquet'\]\)"):
        load_split("", "test", str(tmp_path))


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_partitions_are_disjoint_seeded_and_exclude_the_public_split(partitioner: str, cifar_test) -> None:  # type: ignore[no-untyped-def]
    labels = cifar_test.labels
    public, private = split_public(len(labels), 1000, seed=3)
    parts = [
        partition_rows(labels, private, partitioner=partitioner, num_partitions=5, partition_id=p, seed=3)
        for p in range(5)
    ]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) == len(private)
    assert not set(joined) & set(public.tolist())
    again = partition_rows(labels, private, partitioner=partitioner, num_partitions=5, partition_id=2, seed=3)
    assert np.array_equal(again, parts[2])
    other = split_public(len(labels), 1000, seed=4)[1]
    other_part = partition_rows(labels, other, partitioner=partitioner, num_partitions=5, partition_id=2, seed=4)
    assert not np.array_equal(other_part, parts[2])
    if partitioner == "iid":
        assert {len(p) for p in parts} == {1800}


@pytest.mark.parametrize(("num_rows", "num_partitions"), [(103, 10), (60, 7), (7, 7), (1000, 1000)])
def test_iid_shards_are_the_ones_flwr_datasets_cuts(num_rows: int, num_partitions: int) -> None:
    from flwr_privshare.data.partitions import build_partitioner, rows_of_partition

    rows = np.random.default_rng(0).permutation(num_rows)
    impl = build_partitioner(
        torch.zeros(num_rows, dtype=torch.int64), rows, partitioner="iid", num_partitions=num_partitions, seed=0
    )
    for partition in range(num_partitions):
        expected = np.asarray(impl.load_partition(partition)["row"], dtype=np.int64)  # the library's own shard
        assert np.array_equal(rows_of_partition(impl, partition), expected)


def test_bad_partition_requests(cifar_test) -> None:  # type: ignore[no-untyped-def]
    _, private = split_public(100, 10, seed=0)
    with pytest.raises(DataError, match="partitioner must be one of"):
        partition_rows(cifar_test.labels, private, partitioner="x", num_partitions=2, partition_id=0, seed=0)
    with pytest.raises(DataError, match="partition id 3 is outside"):
        partition_rows(cifar_test.labels, private, partitioner="iid", num_partitions=2, partition_id=3, seed=0)
    with pytest.raises(DataError, match="public-size must be in"):
        split_public(100, 100, seed=0)


def test_hub_ids_go_through_datasets(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path (no network here): ``datasets.load_dataset(hub_id, split=...)`` is decoded the same way."""
    import datasets

    import flwr_privshare.data.datasets as data

    requested = []
    real_load_dataset = datasets.load_dataset

    def offline_load_dataset(path: str, split: str) -> datasets.Dataset:
        requested.append((path, split))
        files = {split: str(data_root / "mnist" / f"{split}.parquet")}
        return real_load_dataset("parquet", data_files=files, split=split, cache_dir=str(tmp_path / "hf"))

    monkeypatch.setattr(datasets, "load_dataset", offline_load_dataset)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_MEMORY_CACHE", {})
    from_hub = load_split("ylecun/mnist", "test")
    local = load_split("", "test", str(data_root / "mnist"))
    assert requested == [("ylecun/mnist", "test")]
    assert torch.equal(from_hub.images, local.images) and torch.equal(from_hub.labels, local.labels)
    assert from_hub.num_classes == 10


def test_a_folder_with_one_file_is_split_per_class_the_same_way_every_time(data_root: Path) -> None:
    """The AT&T faces (40 people x 10 images, no fixed split): 2 test and 8 training images of every person,
    disjoint, the same in every process."""
    folder = str(data_root / "att_faces")
    train, test = load_split("", "train", folder), load_split("", "test", folder)
    assert (len(train), len(test), train.image_shape, train.num_classes) == (320, 80, (1, 112, 92), 40)
    assert torch.bincount(test.labels).tolist() == [2] * 40 and torch.bincount(train.labels).tolist() == [8] * 40
    whole = load_split("", "all", folder)
    digests = [{hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in part.images} for part in (train, test)]
    assert not digests[0] & digests[1] and len(digests[0] | digests[1]) == len(whole)
    first_test_rows = [int(torch.nonzero(whole.labels == label)[0]) for label in range(40)]
    assert torch.equal(test.images[test.labels == 0][0], whole.images[first_test_rows[0]])  # file order, no seed


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_a_process_builds_a_runs_partitioner_once_and_serves_every_client_from_it(
    data_root: Path, partitioner: str
) -> None:
    from flwr_privshare.config import CommonSection
    from flwr_privshare.data import client_rows
    from flwr_privshare.data.partitions import _run_partitioner

    common = CommonSection(
        dataset="ylecun/mnist", data_dir=str(data_root / "mnist"), public_size=1000, seed=5, partitioner=partitioner
    )
    _run_partitioner.cache_clear()
    rows = [client_rows(common, partition, 7) for partition in range(7)]
    assert _run_partitioner.cache_info().misses == 1 and _run_partitioner.cache_info().hits == 6
    train = load_split("ylecun/mnist", "train", str(data_root / "mnist"))
    _, private = split_public(len(train), 1000, seed=5)
    for partition in (0, 3, 6):  # the same rows as flwr-datasets gives for one partition on its own
        expected = partition_rows(
            train.labels, private, partitioner=partitioner, num_partitions=7, partition_id=partition, seed=5
        )
        assert np.array_equal(rows[partition], expected)


def test_the_decoded_data_set_is_memory_mapped_from_the_disk_cache(data_root: Path) -> None:
    import flwr_privshare.data.datasets as data

    load_split("ylecun/mnist", "train", str(data_root / "mnist"))
    cached = {str(path) for path in data.cache_dir().glob("*.pt")}
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(".pt")}
    assert cached & mapped  # one copy in the page cache, shared by every process that loads it


def test_privshare_partition_writes_each_nodes_rows_and_a_node_with_a_data_dir_trains_on_them(
    data_root: Path, tmp_path: Path
) -> None:
    from flwr.app import Context, RecordDict

    from flwr_privshare.config import CommonSection
    from flwr_privshare.data import client_partition
    from flwr_privshare.data.export import main, node_partition

    main([str(data_root / "mnist"), "--num-partitions", "3", "--output", str(tmp_path), "--seed", "9"])
    common = CommonSection(dataset="ylecun/mnist", data_dir=str(data_root / "mnist"), seed=9)
    simulated = [client_partition(common, partition, 3) for partition in range(3)]
    for partition in range(3):
        folder = tmp_path / f"partition-{partition}"
        assert json.loads((folder / "partition.json").read_text())["rows"] == len(simulated[partition])
        # a node told to read partition (p + 1)'s folder trains on those rows, whatever its partition-id
        other = (partition + 1) % 3
        node_config = {"partition-id": partition, "num-partitions": 3, "data-dir": str(tmp_path / f"partition-{other}")}
        context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})
        local = node_partition(common, context)
        assert torch.equal(local.images, simulated[other].images) and torch.equal(local.labels, simulated[other].labels)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["partition-0", "partition-1", "partition-2"]
