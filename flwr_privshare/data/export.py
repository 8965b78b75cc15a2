"""``privshare-partition``: write each node's partition as its own parquet folder, for Flower deployments.

In a deployment every SuperNode holds only its own data. This command cuts a data folder exactly as
the simulation does (the run seed's public split, then the flwr-datasets partitioner over the
private rows, capped at ``samples-per-client``) and writes partition ``i`` as
``<output>/partition-<i>/train.parquet``: the source file's rows, in the hub's schema, untouched.
A SuperNode started with ``--node-config "partition-id=<i> num-partitions=<n> data-dir=<that folder>"``
trains on that folder (:func:`node_partition`); without ``data-dir`` in its node config a client
keeps the simulated partitioning. ``partition.json`` beside it records how it was cut.

    privshare-partition ../shared/datasets/cifar10 --num-partitions 2 --output nodes --seed 42
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from flwr.app import Context

from ..config import CommonSection, ConfigError
from ..results import atomic_target, atomic_write_json
from .datasets import DataError, ImageDataset, load_split, local_split_path
from .partitions import client_partition, client_rows

#: The node-config key of a node's own data folder (a folder ``privshare-partition`` wrote).
NODE_DATA_DIR = "data-dir"


def node_partition(common: CommonSection, context: Context) -> ImageDataset:
    """This client's training rows: its node's own folder when the node config names one (a deployment), else
    the simulated partition ``partition-id`` of ``num-partitions`` (capped at ``samples-per-client`` either way)."""
    folder = context.node_config.get(NODE_DATA_DIR)
    if folder:
        data = load_split(common.dataset, "train", str(folder))
        return data.head(common.samples_per_client) if common.samples_per_client > 0 else data
    return client_partition(
        common, int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    )


def write_partitions(common: CommonSection, num_partitions: int, output: Path) -> list[Path]:
    """Write every partition's rows of ``common.data_dir``'s train split under ``output``; return the folders."""
    source = local_split_path(common.data_dir, "train")
    table = pq.read_table(source)
    folders = []
    for partition in range(num_partitions):
        rows = client_rows(common, partition, num_partitions)
        folder = output / f"partition-{partition}"
        with atomic_target(folder / "train.parquet") as temporary:
            pq.write_table(table.take(pa.array(rows)), temporary)
        atomic_write_json(
            folder / "partition.json",
            {
                "partition-id": partition,
                "num-partitions": num_partitions,
                "rows": len(rows),
                "source": str(source),
                "config": common.to_run_config(),
            },
        )
        folders.append(folder)
    return folders


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="privshare-partition", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", help="a data folder with train.parquet (the hub's schema)")
    parser.add_argument("--num-partitions", type=int, required=True, help="the number of nodes")
    parser.add_argument("--output", type=Path, required=True, help="receives partition-<i>/ folders")
    defaults = CommonSection()
    for key in ("seed", "public-size", "partitioner", "dirichlet-alpha", "samples-per-client"):
        value = defaults.to_run_config()[key]
        parser.add_argument(f"--{key}", type=type(value), default=value, help=f"as the run config's {key}")
    args = parser.parse_args(argv)
    try:
        if args.num_partitions < 1:
            raise ConfigError(f"--num-partitions is {args.num_partitions}; it must be a positive integer")
        common = CommonSection(
            data_dir=str(Path(args.data_dir).resolve()),
            seed=args.seed,
            public_size=args.public_size,
            partitioner=args.partitioner,
            dirichlet_alpha=args.dirichlet_alpha,
            samples_per_client=args.samples_per_client,
        )
        folders = write_partitions(common, args.num_partitions, args.output)
    except (ConfigError, DataError) as error:
        parser.error(str(error))
    print(json.dumps([str(folder) for folder in folders], indent=1))


if __name__ == "__main__":
    main()
