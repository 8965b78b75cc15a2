"""ClientApp behaviours: load the client's partition, protect it, train, reply.

A VisualMixer client shuffles its own partition once (Algorithm 1) with a key that
never leaves it, keeps the shuffled images in ``context.state`` for later rounds, and
trains on them. Its reply carries only the model arrays and scalar metrics: no images,
no permutations, no seeds (``tests/test_wire.py`` checks the actual messages).

The mixing key is ``node_config["vim-seed"]`` when the SuperNode sets one (a real
deployment: a secret only that client knows); in simulation it is derived from the run
seed and the partition id so that runs are reproducible.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict

from .config import ExperimentConfig, derive_seed
from .data import ImageDataset, load_split, partition_rows, split_public
from .models import build_model, model_name_for
from .train import get_device, train
from .visualmixer import visual_mix

VIM_STATE_KEY = "visualmixer-data"
VIM_METRICS_KEY = "visualmixer-metrics"


def client_partition(config: ExperimentConfig, partition_id: int, num_partitions: int) -> ImageDataset:
    """The plain training rows of ``partition_id`` (never the public split)."""
    train_split = load_split(config.dataset, "train", config.data_dir)
    _, private_rows = split_public(len(train_split), config.public_size, config.seed)
    rows = partition_rows(
        train_split.labels,
        private_rows,
        partitioner=config.partitioner,
        num_partitions=num_partitions,
        partition_id=partition_id,
        seed=config.seed,
        dirichlet_alpha=config.dirichlet_alpha,
    )
    return train_split.subset(rows).head(config.samples_per_client)


def mixing_seed(config: ExperimentConfig, context: Context, partition_id: int) -> int:
    """The client's private VisualMixer key (see the module docstring)."""
    if "vim-seed" in context.node_config:
        return int(context.node_config["vim-seed"])
    return derive_seed(config.seed, "visualmixer", partition_id)


def visualmixed_partition(config: ExperimentConfig, context: Context) -> tuple[ImageDataset, MetricRecord]:
    """The client's VisualMixer-shuffled partition, mixed on first use and kept in ``context.state``."""
    if VIM_STATE_KEY in context.state:
        stored = context.state.array_records[VIM_STATE_KEY]
        data = ImageDataset(
            torch.from_numpy(stored["images"].numpy()),
            torch.from_numpy(stored["labels"].numpy()),
            int(stored["num-classes"].numpy()),
        )
        return data, context.state.metric_records[VIM_METRICS_KEY]
    partition_id = int(context.node_config["partition-id"])
    plain = client_partition(config, partition_id, int(context.node_config["num-partitions"]))
    config.validate_image_shape(plain.image_shape)
    generator = torch.Generator().manual_seed(mixing_seed(config, context, partition_id))
    mixed = visual_mix(
        plain.images,
        config.vim_window_min,
        config.vim_window_max,
        channel_shuffle=config.vim_channel_shuffle,
        generator=generator,
    )
    data = ImageDataset(mixed.images, plain.labels, plain.num_classes)
    metrics = MetricRecord(
        {
            "vfe-plain": float(mixed.vfe_before.mean()),
            "vfe-mixed": float(mixed.vfe_after.mean()),
        }
    )
    context.state[VIM_STATE_KEY] = ArrayRecord(
        {
            "images": Array(data.images.numpy()),
            "labels": Array(data.labels.numpy()),
            "num-classes": Array(np.asarray(data.num_classes)),
        }
    )
    context.state[VIM_METRICS_KEY] = metrics
    return data, metrics


def train_handler(msg: Message, context: Context) -> Message:
    """Train the received global model on the client's (protected) partition."""
    config = ExperimentConfig.from_run_config(context.run_config)
    partition_id = int(context.node_config["partition-id"])
    if config.protection == "visualmixer":
        data, extra = visualmixed_partition(config, context)
    else:
        data = client_partition(config, partition_id, int(context.node_config["num-partitions"]))
        extra = MetricRecord()
    name = config.model if config.model != "auto" else model_name_for(data.image_shape)
    model = build_model(name, data.num_classes)
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    server_round = cast(int, msg.content.config_records["config"]["server-round"])
    loss = train(
        model,
        data,
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        device=get_device(),
        generator=torch.Generator().manual_seed(derive_seed(config.seed, "train", partition_id, server_round)),
    )
    metrics = MetricRecord({"loss": loss, "num-examples": len(data), **dict(extra)})
    content = RecordDict({"arrays": ArrayRecord(model.cpu().state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)
