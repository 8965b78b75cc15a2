"""MDP / AugMDP as a protection: every client distorts its partition's image-label mapping once, then trains on it.

A client replaces every training pair ``(x_t, y_t)`` by ``(x_m, y_t)``, ``x_m`` being an image
of another class pushed by PGD until the feature network ``f`` sees ``x_t``'s features in it
(:func:`~flwr_privshare.mdp.map_distort`). The distorted data, the pairing and the key that
drew it stay on the client (``context.state``, and a record file when ``mdp-record-dir`` is
set); only model updates and scalar metrics leave it.

Where ``f`` comes from (``mdp-feature-source``):

- ``"public"``: the server trains a network on its public split and sends it to every node in
  a query message before round 1; each client distorts its data when it arrives.
- ``"global-model"``: the global model a client receives in its first training round (no
  extra message; at round 1 that is the freshly initialised model).

The server distorts ``mdp-audit-size`` test images itself, with the same ``f``, to report SSIM
and to let the oracle attack say whether a machine sees the selected or the target class
(test sets ``mdp-target`` and ``mdp-selected``, evaluated after the benign ``plain`` one).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from ..config.checks import ConfigError
from ..config.common import CommonSection
from ..data import ImageDataset
from ..mdp import Distortion, MDPSection, map_distort
from ..models import ImageClassifier, build_model
from ..results import atomic_torch_save
from ..seeding import derive_seed
from ..train import evaluate, get_device
from .base import HeadlineColumn, Protection, register_protection
from .client_state import data_key, keep_data, kept_data

STATE_KEY = data_key("mdp")
METRICS_KEY = "mdp-metrics"
#: The array record of the server's feature-network broadcast, and the config record naming its architecture.
FEATURE_NETWORK = "mdp-feature-network"
FEATURE_NETWORK_CONFIG = "mdp-feature-network-config"
#: Metrics a client reports about its distortion (scalars over its whole partition).
CLIENT_METRICS = ("mdp-ssim", "mdp-label-differs", "mdp-distance-start", "mdp-distance-end", "mdp-seconds-per-image")


def client_key(seed: int, context: Context) -> int:
    """The key of a client's pairing: ``node_config["mdp-seed"]`` when the SuperNode sets one (a secret only it
    knows), else derived from the run seed and the partition id (reproducible simulations)."""
    if "mdp-seed" in context.node_config:
        return int(context.node_config["mdp-seed"])
    return derive_seed(seed, "mdp", int(context.node_config["partition-id"]))


def record_path(folder: str | Path, partition_id: int) -> Path:
    """Where a client keeps its protection record in ``mdp-record-dir``."""
    return Path(folder).expanduser() / f"mdp-record-{partition_id}.pt"


def save_record(distortion: Distortion, path: Path) -> None:
    """Write a client's protection record (its distorted pairs and how they were drawn) atomically."""
    atomic_torch_save(
        {
            "images": distortion.data.images,
            "labels": distortion.data.labels,
            "selected_labels": distortion.selected_labels,
            "selected_index": distortion.selected_index,
            "target_index": distortion.target_index,
            "num_classes": distortion.data.num_classes,
        },
        path,
    )


@register_protection
class MDPProtection(Protection):
    """MDP / AugMDP (Li et al., ICASSP 2021): clients train on pairs whose images look like another class."""

    name = "mdp"
    headline_columns = (
        HeadlineColumn("mdp_ssim", "SSIM (modified, selected)", ("mdp", "clients", "ssim")),
        HeadlineColumn("mdp_oracle_selected", "oracle: selected class", ("oracle", "views", "mdp-selected"), True),
        HeadlineColumn("mdp_oracle_target", "oracle: target class", ("oracle", "views", "mdp-target"), True),
    )
    section = MDPSection
    conflicts = ("visualmixer",)
    protected_view_first = False

    def __init__(self, run: Any) -> None:
        super().__init__(run)
        self.feature_network: ImageClassifier | None = None
        self.feature_network_accuracy: float | None = None
        self._audit: Distortion | None = None
        self._broadcast_failures = 0

    @property
    def settings(self) -> MDPSection:
        return self.run[MDPSection]

    def distort(self, data: ImageDataset, network: ImageClassifier, seed: int) -> Distortion:
        """MDP / AugMDP of ``data`` with the run's settings, the pairing drawn from ``seed``."""
        settings = self.settings
        return map_distort(
            data,
            network,
            copies=settings.mdp_copies,
            steps=settings.mdp_steps,
            step_size=settings.mdp_step_size,
            distance=settings.mdp_distance,
            generator=torch.Generator().manual_seed(seed),
            device=get_device(),
            batch_size=settings.mdp_batch_size,
        )

    # -- server side ---------------------------------------------------------------------------
    def prepare(self, public: ImageDataset, model: ImageClassifier, model_name: str) -> None:
        """The server's ``f``: trained on the public split (``"public"``) or the initial global model."""
        if public.num_classes < 2 or len(torch.unique(public.labels)) < 2:
            raise ConfigError(
                "run-config key 'protection' names 'mdp', which needs a data set with at least two classes; "
                f"the public split has {len(torch.unique(public.labels))}"
            )
        if self.settings.mdp_feature_source == "global-model":
            self.feature_network = copy.deepcopy(model)
            return
        from ..attacks.oracle import train_oracle  # an oracle's training recipe, under the feature network's own seed

        log(INFO, "MDP: training the feature network on %d public images", len(public))
        self.feature_network = train_oracle(
            public,
            model_name=model_name,
            epochs=self.settings.mdp_pretrain_epochs,
            seed=derive_seed(self.run[CommonSection].seed, "mdp-feature-network"),
            device=get_device(),
        ).cpu()

    def test_sets(self, test: ImageDataset) -> dict[str, ImageDataset]:
        """The server's own distortion of the first ``mdp-audit-size`` test images, labelled with their targets'
        classes (``mdp-target``) and with their selected images' classes (``mdp-selected``)."""
        network = self._network()
        self.feature_network_accuracy = evaluate(network, test, device=get_device())[1]
        size = min(self.settings.mdp_audit_size, len(test))
        if size == 0:
            return {}
        self._audit = self.distort(test.head(size), network, derive_seed(self.run[CommonSection].seed, "mdp", "audit"))
        images = self._audit.data.images
        return {
            "mdp-target": self._audit.data,
            "mdp-selected": ImageDataset(images, self._audit.selected_labels, test.num_classes),
        }

    def broadcast(self, grid: Grid, timeout: float) -> list[Message]:
        """Send the feature network to every node before round 1 (``"public"`` source); each distorts its data
        and replies with its metrics only."""
        if self.settings.mdp_feature_source != "public":
            return []
        network = self._network()
        content = RecordDict(
            {
                FEATURE_NETWORK: ArrayRecord(network.state_dict()),
                FEATURE_NETWORK_CONFIG: ConfigRecord({"num-outputs": network.classifier.out_features}),
            }
        )
        nodes = list(grid.get_node_ids())
        log(INFO, "MDP: sending the feature network to %d nodes", len(nodes))
        messages = [Message(content, dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        self._broadcast_failures = len(nodes) - sum(not reply.has_error() for reply in replies)
        if self._broadcast_failures:
            log(WARNING, "MDP: %d of %d nodes did not distort their data", self._broadcast_failures, len(nodes))
        return replies

    def report(self, strategy: Strategy, result: Result) -> dict[str, Any]:
        settings = self.settings
        first = result.train_metrics_clientapp.get(min(result.train_metrics_clientapp, default=0), MetricRecord())
        report: dict[str, Any] = {
            "distance": settings.mdp_distance,
            "steps": settings.mdp_steps,
            "step_size": settings.mdp_step_size,
            "copies": settings.mdp_copies,
            "feature_source": settings.mdp_feature_source,
            "feature_network_test_accuracy": self.feature_network_accuracy,
            "clients": _snake({key: float(cast(float, first[key])) for key in CLIENT_METRICS if key in first}),
        }
        if settings.mdp_feature_source == "public":
            report["broadcast_failures"] = self._broadcast_failures
        if self._audit is not None:
            report["audit"] = {"images": len(self._audit.data), **_snake(self._audit.metrics())}
        return report

    def resume_obstacle(self, failed_replies: int) -> str | None:
        if self.settings.mdp_feature_source == "global-model":
            return (
                "MDP with mdp-feature-source 'global-model': each client distorted its data with the global model of "
                "its first round, which a resumed run cannot give it again"
            )
        return None

    def _network(self) -> ImageClassifier:
        if self.feature_network is None:
            raise RuntimeError("MDP: the feature network is not prepared (call prepare() first)")
        return self.feature_network

    # -- client side ---------------------------------------------------------------------------
    def answer_query(self, msg: Message, context: Context, partition: Callable[[], ImageDataset]) -> Message | None:
        """Distort the client's partition with the feature network the server sent; reply with metrics only."""
        if FEATURE_NETWORK not in msg.content.array_records:
            return None
        config = msg.content.config_records[FEATURE_NETWORK_CONFIG]
        data = partition()
        model_name = self.run[CommonSection].model_for(data.image_shape)
        network = build_model(model_name, int(cast(int, config["num-outputs"])))
        network.load_state_dict(msg.content.array_records[FEATURE_NETWORK].to_torch_state_dict())
        _, metrics = self._protect(data, network, context)
        return Message(RecordDict({METRICS_KEY: MetricRecord(dict(metrics))}), reply_to=msg)

    def client_data(
        self, data: ImageDataset, context: Context, model: ImageClassifier
    ) -> tuple[ImageDataset, dict[str, float]]:
        """The distorted partition, kept in ``context.state``; with the ``"global-model"`` source it is made now
        from the received model (the client's first round)."""
        kept = kept_data(context, self.name)
        if kept is not None:
            return kept
        if self.settings.mdp_feature_source == "global-model":
            network = model
        elif self.feature_network is not None:  # the server side simulating a client (reference models)
            network = self.feature_network
        else:
            raise RuntimeError(
                "MDP: this client has no distorted data: the server's feature network did not reach it before round 1"
            )
        return self._protect(data, network, context)

    def _protect(
        self, data: ImageDataset, network: ImageClassifier, context: Context
    ) -> tuple[ImageDataset, dict[str, float]]:
        """Distort ``data``, keep it in ``context.state`` (and the record file); return it and the client's metrics."""
        distortion = self.distort(data, network, client_key(self.run[CommonSection].seed, context))
        metrics = distortion.metrics()
        keep_data(context, self.name, distortion.data, metrics)
        if self.settings.mdp_record_dir:
            partition = int(context.node_config.get("partition-id", context.node_id))
            save_record(distortion, record_path(self.settings.mdp_record_dir, partition))
        return distortion.data, metrics


def _snake(metrics: dict[str, float]) -> dict[str, float]:
    return {key.removeprefix("mdp-").replace("-", "_"): value for key, value in metrics.items()}
