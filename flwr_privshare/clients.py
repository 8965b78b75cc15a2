"""ClientApp behaviours: load the client's partition, protect it, train, reply.

Protections (run-config ``protection``): ``none``; ``visualmixer``; ``dp-sgd`` (Opacus,
with the accountant's history kept in ``context.state`` so the reported epsilon is
cumulative); ``visualmixer+dp-sgd``; ``dp-fedavg`` (plain local training; the server clips
and adds noise, or the client clips when the server asks for it, see
:func:`dp_clipping_mod`).

A VisualMixer client shuffles its own partition once (Algorithm 1) with a key that
never leaves it, keeps the shuffled images in ``context.state`` for later rounds, and
trains on them. Its reply carries only the model arrays and scalar metrics: no images,
no permutations, no seeds (``tests/test_wire.py`` checks the actual messages).

The mixing key is ``node_config["vim-seed"]`` when the SuperNode sets one (a real
deployment: a secret only that client knows); in simulation it is derived from the run
seed and the partition id so that runs are reproducible.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from flwr_privshare.strategies.dp_fedavg import ADAPTIVE_CLIPPING_KEY

from .config import ExperimentConfig, derive_seed
from .data import ImageDataset, load_split, partition_rows, split_public
from .dp import history_from_record, history_to_record, noise_multiplier_for_target, train_dp_sgd
from .models import build_model, model_name_for
from .train import get_device, train
from .visualmixer import visual_mix

VIM_STATE_KEY = "visualmixer-data"
VIM_METRICS_KEY = "visualmixer-metrics"
DP_SGD_STATE_KEY = "dp-sgd-accountant"


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


def training_data(config: ExperimentConfig, context: Context) -> tuple[ImageDataset, dict[str, float]]:
    """The client's training data under its protection, and metrics about it to report."""
    if config.uses_visualmixer:
        data, metrics = visualmixed_partition(config, context)
        return data, {key: float(value) for key, value in metrics.items()}  # type: ignore[arg-type]
    partition_id = int(context.node_config["partition-id"])
    return client_partition(config, partition_id, int(context.node_config["num-partitions"])), {}


def dp_sgd_noise_multiplier(config: ExperimentConfig, num_examples: int) -> float:
    """``noise-multiplier``, or the one that keeps all rounds within ``target-epsilon`` (Opacus RDP).

    Opacus samples each batch with rate ``1 / ceil(n / batch_size)`` and takes that many
    steps per epoch; a client that trains in every round takes
    ``num_server_rounds * local_epochs`` epochs.
    """
    if config.target_epsilon <= 0:
        return config.noise_multiplier
    steps_per_epoch = -(-num_examples // config.batch_size)
    steps = config.num_server_rounds * config.local_epochs * steps_per_epoch
    return noise_multiplier_for_target(config.target_epsilon, config.delta, 1.0 / steps_per_epoch, steps)


def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``fixedclipping_mod`` (or ``adaptiveclipping_mod``) when the server asks for client-side clipping.

    ``DPFedAvg(..., clipping="client")`` sends ``clipping_norm`` in the train config; the mod
    then clips this client's update before it leaves the client.
    """
    configs = msg.content.config_records
    if any(ADAPTIVE_CLIPPING_KEY in record for record in configs.values()):
        return adaptiveclipping_mod(msg, context, call_next)
    if any("clipping_norm" in record for record in configs.values()):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def train_handler(msg: Message, context: Context) -> Message:
    """Train the received global model on the client's (protected) partition."""
    config = ExperimentConfig.from_run_config(context.run_config)
    partition_id = int(context.node_config["partition-id"])
    data, extra = training_data(config, context)
    name = config.model if config.model != "auto" else model_name_for(data.image_shape)
    model = build_model(name, data.num_classes)
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    server_round = cast(int, msg.content.config_records["config"]["server-round"])
    seed = derive_seed(config.seed, "train", partition_id, server_round)
    local_training: dict[str, Any] = {
        "epochs": config.local_epochs,
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "learning_rate": config.learning_rate,
        "device": get_device(),
    }
    if config.uses_dp_sgd:
        stored = context.state.config_records.get(DP_SGD_STATE_KEY)
        noise_multiplier = dp_sgd_noise_multiplier(config, len(data))
        result = train_dp_sgd(
            model,
            data,
            noise_multiplier=noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            delta=config.delta,
            history=history_from_record(stored) if stored is not None else [],
            seed=seed,
            accountant=config.dp_accountant,
            **local_training,
        )
        context.state[DP_SGD_STATE_KEY] = history_to_record(result.history, config.dp_accountant)
        loss = result.loss
        extra["epsilon"] = result.epsilon
        extra["noise-multiplier"] = noise_multiplier
    else:
        loss = train(model, data, generator=torch.Generator().manual_seed(seed), **local_training)
    metrics = MetricRecord({"loss": loss, "num-examples": len(data), **dict(extra)})
    content = RecordDict({"arrays": ArrayRecord(model.cpu().state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)
