"""The FedAvg-family experiment: plain FedAvg under any composition of registered protections.

The server evaluates the global model centrally after every round on the protected view of
the test set (when a protection changes images) and on the plain one; the protections may
wrap the strategy (DP-FedAvg) and report their section. Clients load their partition, let
every protection change it (VisualMixer), train (plainly, or with the protection that
brings its own loop: DP-SGD) and reply with the model arrays and scalar metrics only.
"""

from __future__ import annotations

import time
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedAvgM, Result, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from ..attacks.gan import (
    AUDIT_ARTIFACT,
    GanSection,
    attacks_now,
    model_outputs_of,
    partition_under_attack,
    prepare_gan_audit,
    with_generated_fakes,
)
from ..config import CommonSection, RunConfig
from ..data import ImageDataset, load_split, public_split
from ..data.export import node_partition
from ..models import ImageClassifier, build_model
from ..protections import LocalTraining, Protection, ProtectionSection, method_name, resolve_protections
from ..protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    ON_CUDA,
    PARTITION_ID,
    SERVER_ROUND,
    TRAIN_SECONDS,
)
from ..recipe.section import recipe_of, server_optimizer_of
from ..seeding import derive_seed, seeded
from ..train import get_device, release_device_memory, train
from .experiment import Experiment, Plan


def aggregate_client_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """FedAvg's weighted mean of the client metrics, plus ``epsilon-max`` and ``epsilon-mean`` over clients.

    A weighted mean of per-client epsilons means nothing; the guarantee of a DP-SGD round
    is that of its worst client (``epsilon-max``). Partition ids are not averaged (the
    ``Recorded`` wrapper records them); training seconds are summed.
    """
    metrics = aggregate_metricrecords(records, weighted_by_key)
    metrics.pop(PARTITION_ID, None)
    seconds = [
        float(cast(float, record[TRAIN_SECONDS]))
        for content in records
        for record in content.metric_records.values()
        if TRAIN_SECONDS in record
    ]
    if seconds:
        metrics[TRAIN_SECONDS] = sum(seconds)
    epsilons = [
        float(cast(float, record["epsilon"]))
        for content in records
        for record in content.metric_records.values()
        if "epsilon" in record
    ]
    if epsilons:
        metrics["epsilon-max"] = max(epsilons)
        metrics["epsilon-mean"] = sum(epsilons) / len(epsilons)
    return metrics


def protections_of(run: RunConfig) -> list[Protection]:
    """The run's protections (none when the app declares no ``protection`` key)."""
    return resolve_protections(run[ProtectionSection].protection, run) if ProtectionSection in run else []


def client_partition(run: RunConfig, context: Context) -> ImageDataset:
    """The client's partition before any protection; in a GAN-attack run the attacker's partition (in the
    control run, every partition) has no image of the victim class."""
    data = node_partition(run[CommonSection], context)
    if GanSection in run:
        data = partition_under_attack(run[GanSection], data, int(context.node_config["partition-id"]))
    return data


def protected_training_data(
    data: ImageDataset, protections: list[Protection], context: Context, model: ImageClassifier
) -> tuple[ImageDataset, dict[str, float]]:
    """The client's partition ``data`` after every protection's data hook (``model``: the received global
    model), and the metrics they report."""
    metrics: dict[str, float] = {}
    for protection in protections:
        data, reported = protection.client_data(data, context, model)
        metrics.update(reported)
    return data, metrics


def train_locally(run: RunConfig, msg: Message, context: Context) -> Message:
    """Train the received global model on the client's protected partition; reply with arrays and metrics.

    A GAN attacker (:mod:`flwr_privshare.attacks.gan`) first trains its generator against the
    received model and adds generated "fake" images to its data; the training and the reply
    are those of every client.
    """
    common = run[CommonSection]
    protections = protections_of(run)
    partition_id = int(context.node_config["partition-id"])
    partition = client_partition(run, context)
    model = build_model(common.model_for(partition.image_shape), model_outputs_of(run, partition.num_classes))
    model.load_state_dict(msg.content.array_records[ARRAYS_KEY].to_torch_state_dict())
    data, data_metrics = protected_training_data(partition, protections, context, model)
    server_round = cast(int, msg.content.config_records[CONFIG_KEY][SERVER_ROUND])
    if GanSection in run and attacks_now(run[GanSection], partition_id, server_round):
        seed = derive_seed(common.seed, "gan", partition_id)
        data = with_generated_fakes(
            run, model, data, context, seed=seed, server_round=server_round, device=get_device()
        )
    local = LocalTraining(
        epochs=common.local_epochs,
        batch_size=common.batch_size,
        optimizer=common.optimizer,
        learning_rate=common.learning_rate,
        device=get_device(),
        seed=derive_seed(common.seed, "train", partition_id, server_round),
        num_server_rounds=common.num_server_rounds,
        recipe=recipe_of(run, data.image_shape, server_round),
        server_round=server_round,
    )
    trainer = next((p for p in protections if p.replaces_training()), None)
    started = time.perf_counter()
    if trainer is not None:
        trained = dict(trainer.train(model, data, context, local))
    else:
        loss = train(model, data, generator=torch.Generator().manual_seed(local.seed), **local.loop_settings())
        trained = {"loss": loss}
    trained[TRAIN_SECONDS] = time.perf_counter() - started
    trained[ON_CUDA] = int(local.device.type == "cuda")
    metrics = MetricRecord(
        {"loss": trained.pop("loss"), NUM_EXAMPLES: len(data), PARTITION_ID: partition_id, **data_metrics, **trained}
    )
    content = RecordDict({ARRAYS_KEY: ArrayRecord(model.cpu().state_dict()), METRICS_KEY: metrics})
    release_device_memory(local.device)
    return Message(content=content, reply_to=msg)


class FedAvgExperiment(Experiment):
    """FedAvg with central evaluation, under the protections of the ``protection`` key."""

    def prepare(self, run: RunConfig, grid: Grid) -> Plan:
        common = run[CommonSection]
        protections = protections_of(run)
        test = load_split(common.dataset, "test", common.data_dir).head(common.test_size)
        for protection in protections:
            protection.check_data(test.image_shape)
        public = public_split(common)
        attacked = GanSection in run and run[GanSection].active
        num_nodes = len(list(grid.get_node_ids())) if attacked else 0
        if attacked:
            run[GanSection].validate_for(test.num_classes, num_nodes)
        model_name = common.model_for(test.image_shape)
        with seeded(derive_seed(common.seed, "model-init")):
            model = build_model(model_name, model_outputs_of(run, test.num_classes))
        for protection in protections:
            protection.prepare(public, model, model_name)
        test_sets: dict[str, ImageDataset] = {}
        for protection in protections:
            if protection.protected_view_first:
                test_sets.update(protection.test_sets(test))
        test_sets["plain"] = test
        for protection in protections:
            if not protection.protected_view_first:
                test_sets.update(protection.test_sets(test))
        plan = Plan(run[ProtectionSection].protection, model_name, model, test_sets, public, protections)
        if attacked:
            audit = prepare_gan_audit(run, protections, public, test, model_name, num_nodes)
            plan.artifacts[AUDIT_ARTIFACT] = audit
            plan.round_audits.append(audit)
        return plan

    def strategy(self, run: RunConfig, plan: Plan, grid: Grid) -> Strategy:
        settings: dict[str, Any] = {
            "fraction_train": run[CommonSection].fraction_train,
            "fraction_evaluate": 0.0,
            "min_train_nodes": 1,
            "min_available_nodes": 1,
            "train_metrics_aggr_fn": aggregate_client_metrics,
        }
        recipe = server_optimizer_of(run)
        strategy: Strategy
        if recipe is not None:
            strategy = FedAvgM(
                **settings, server_learning_rate=recipe.server_learning_rate, server_momentum=recipe.server_momentum
            )
        else:
            strategy = FedAvg(**settings)
        for protection in plan.protections:
            plan.broadcast_replies[protection.name] = protection.broadcast(grid, run[CommonSection].round_timeout)
            strategy = protection.wrap_strategy(strategy, grid)
        return strategy

    def method(self, run: RunConfig, plan: Plan) -> str:
        """``fedavg``, or ``fedavgm`` when the server steps with momentum or its own learning rate."""
        return method_name(plan.protections, "fedavg" if server_optimizer_of(run) is None else "fedavgm")

    def details(self, run: RunConfig, plan: Plan, strategy: Strategy, result: Result) -> dict[str, Any]:
        final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
        return {"final_plain_accuracy": final["plain_accuracy"]}

    def train(self, msg: Message, context: Context) -> Message:
        return train_locally(self.schema.parse(context.run_config), msg, context)

    def query(self, msg: Message, context: Context) -> Message:
        """A protection's query (MDP's feature network before round 1), else the skeleton's queries."""
        run = self.schema.parse(context.run_config)
        for protection in protections_of(run):
            reply = protection.answer_query(msg, context, lambda: client_partition(run, context))
            if reply is not None:
                return reply
        return super().query(msg, context)
