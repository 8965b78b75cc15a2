"""Feature-sharing refinement with Deep Poisoning Modules (Guo et al., arXiv 1912.06895, §4).

Each round the server broadcasts the classifier Phi = phi2 o phi1 (split at a hook point),
the reconstructor psi and, optionally, further straw men (an ensemble) and a check
reconstructor; every sampled client trains
(or continues) its private DPM P against them and replies with poisoned features
``P(phi1 x)`` (float16) and their labels, never images and never P. With a check
reconstructor, a client whose P fails its self-check
(:mod:`~flwr_privshare.poisoning.self_check`) on every draw replies with an error instead,
which Flower and :class:`~flwr_privshare.strategies.Recorded` count as a failure.

The server keeps the latest features of every client, pools them and refines the decider
phi2 on the pool with cross-entropy; phi1 stays fixed, so every client's poisoned features
keep their meaning.

Replies are validated before they are pooled: a reply whose features do not have the
featurizer's shape, whose dtype is not a float, whose values are not finite or whose
labels are out of range is rejected, logged and counted (``rejected`` in the round's
metrics), and the round goes on with the others.

Bootstrapping Phi is the caller's choice: train it on public data first, or run FedAvg
rounds, then pass the result as ``initial_arrays`` to :meth:`start`::

    strategy = FeatureSharing("cifar-cnn", "pool1", reconstructor, image_shape=(3, 32, 32), num_classes=10)
    result = strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=3, evaluate_fn=...)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from logging import INFO, WARNING
from typing import cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flwr_privshare.models import build_model
from flwr_privshare.poisoning import Reconstructor, SelfCheck, feature_shape, split_model
from flwr_privshare.poisoning.refine import REFINE_BATCH_SIZE, REFINE_LEARNING_RATE, train_decider
from flwr_privshare.poisoning.section import DPMSection
from flwr_privshare.protocol import (
    CHECK_RECONSTRUCTOR_KEY,
    ENSEMBLE_KEY,
    FEATURE_SHARING_TASK,
    FEATURES_KEY,
    RECONSTRUCTOR_KEY,
    SELF_CHECK_FAILED,
    TASK_KEY,
    WARMUP_KEY,
)

CLIENT_METRICS = ("dpm-ssim", "dpm-check-ssim", "dpm-draws")


class InvalidReplyError(ValueError):
    """A client's reply that cannot be pooled (wrong shape, dtype, values or labels)."""


class FeatureSharing(FedAvg):
    """Refine the decider phi2 on poisoned features pooled from every client.

    Client sampling, message construction and failure handling are FedAvg's; only what is
    sent (Phi, psi and the DPM settings) and what is done with the replies differ.

    Parameters
    ----------
    model_name : str
        A :data:`~flwr_privshare.models.MODEL_NAMES` entry; clients build the same model.
    hook : str
        The hook point that splits the model into phi1 and phi2.
    reconstructor : Reconstructor
        psi, trained on public data to invert phi1; the DPMs are trained against it.
    image_shape : tuple[int, int, int]
        ``(C, H, W)`` of the images; fixes the expected feature shape.
    num_classes : int
        Labels must lie in ``[0, num_classes)``.
    ssim_weight : float (default: 1.0)
        The DPM loss's lambda (Eq. 3), sent to the clients.
    feature_noise : float (default: 0.0)
        Relative std of the noise on psi's input in the DPM loss's SSIM term
        (:func:`~flwr_privshare.poisoning.train_dpm`); 0 is the paper's loss.
    dpm_epochs : int (default: 1)
        Local DPM training epochs per round.
    warmup_epochs : int (default: 0)
        Further epochs a fresh DPM (a client's first, or a redraw) trains before it shares.
    shared_samples : int (default: 1000)
        Features each client shares per round (0: all of its data).
    ensemble : Sequence[Reconstructor] (default: ())
        Further straw men (trained on public data) the DPMs train against together with
        psi (:func:`~flwr_privshare.poisoning.train_dpm`); empty: the paper's protocol.
    self_check : SelfCheck | None (default: None)
        The check reconstructor (trained on public data), threshold and draws a client's
        self-check uses; None: clients share without checking (the paper's protocol).
    refine_epochs : int (default: 1)
        Epochs of decider refinement on the pool per round.
    refine_batch_size : int (default: 64)
    refine_learning_rate : float (default: 1e-3)
        Adam's learning rate for the refinement.
    fraction_train, min_train_nodes, min_available_nodes :
        As in :class:`flwr.serverapp.strategy.FedAvg`.
    seed : int (default: 0)
        Seeds the order of the refinement batches.
    """

    def __init__(
        self,
        model_name: str,
        hook: str,
        reconstructor: Reconstructor,
        *,
        image_shape: tuple[int, int, int],
        num_classes: int,
        ssim_weight: float = 1.0,
        feature_noise: float = 0.0,
        dpm_epochs: int = 1,
        warmup_epochs: int = 0,
        shared_samples: int = 1000,
        ensemble: Sequence[Reconstructor] = (),
        self_check: SelfCheck | None = None,
        refine_epochs: int = 1,
        refine_batch_size: int = REFINE_BATCH_SIZE,
        refine_learning_rate: float = REFINE_LEARNING_RATE,
        fraction_train: float = 1.0,
        min_train_nodes: int = 1,
        min_available_nodes: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=0.0,
            min_train_nodes=min_train_nodes,
            min_available_nodes=min_available_nodes,
        )
        # The DPM section holds the rules of these settings (ConfigError, a ValueError, names the key).
        DPMSection(
            dpm_lambda=ssim_weight,
            dpm_feature_noise=feature_noise,
            dpm_epochs=dpm_epochs,
            dpm_warmup_epochs=warmup_epochs,
            dpm_shared_samples=shared_samples,
            refine_epochs=refine_epochs,
        )
        if self_check is not None and self_check.checker.name in {member.name for member in ensemble}:
            raise ValueError(
                f"the check reconstructor {self_check.checker.name!r} is also in the ensemble; "
                "a client must check its DPM with a reconstructor it was not trained against"
            )
        self.model = build_model(model_name, num_classes)
        self.split = split_model(self.model, hook)
        self.feature_shape = feature_shape(self.split.featurizer, image_shape)
        self.model_name, self.hook, self.num_classes = model_name, hook, num_classes
        self.reconstructor = reconstructor
        self.ssim_weight, self.dpm_epochs, self.shared_samples = ssim_weight, dpm_epochs, shared_samples
        self.feature_noise, self.warmup_epochs = feature_noise, warmup_epochs
        self.ensemble = list(ensemble)
        self.self_check = self_check
        self.refine_epochs, self.refine_batch_size = refine_epochs, refine_batch_size
        self.refine_learning_rate = refine_learning_rate
        self.generator = torch.Generator().manual_seed(seed)
        self.pool: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rejected: dict[int, int] = {}
        self.withheld: dict[int, int] = {}

    def __repr__(self) -> str:
        return (
            f"FeatureSharing(model={self.model_name!r}, hook={self.hook!r}, reconstructor={self.reconstructor.name!r})"
        )

    def summary(self) -> None:
        """Log the strategy's settings."""
        log(
            INFO,
            "\t%r: lambda=%s, feature_noise=%s, ensemble=%s, shared_samples=%s, self_check=%s",
            self,
            self.ssim_weight,
            self.feature_noise,
            [member.name for member in self.ensemble] or "off",
            self.shared_samples,
            self._check_settings() or "off",
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling and messages, plus the straw men's (and the checker's) weights and the DPM settings.

        ``arrays`` (the current Phi) is also loaded into the server's copy, which the
        refinement then trains.
        """
        self.model.load_state_dict(arrays.to_torch_state_dict())
        config = ConfigRecord(
            {
                **config,
                TASK_KEY: FEATURE_SHARING_TASK,
                "model": self.model_name,
                "hook": self.hook,
                "reconstructor": self.reconstructor.name,
                "ssim-weight": self.ssim_weight,
                "feature-noise": self.feature_noise,
                ENSEMBLE_KEY: ",".join(member.name for member in self.ensemble),
                "dpm-epochs": self.dpm_epochs,
                WARMUP_KEY: self.warmup_epochs,
                "shared-samples": self.shared_samples,
                **self._check_settings(),
            }
        )
        messages = list(super().configure_train(server_round, arrays, config, grid))
        reconstructor = ArrayRecord(self.reconstructor.state_dict())
        members = [ArrayRecord(member.state_dict()) for member in self.ensemble]
        checker = ArrayRecord(self.self_check.checker.state_dict()) if self.self_check else None
        for message in messages:
            message.content[RECONSTRUCTOR_KEY] = reconstructor
            for index, member in enumerate(members):
                message.content[f"{ENSEMBLE_KEY}-{index}"] = member
            if checker is not None:
                message.content[CHECK_RECONSTRUCTOR_KEY] = checker
        return messages

    def _check_settings(self) -> dict[str, str | float | int]:
        """The self-check's settings for the clients' config (none when there is no self-check)."""
        if self.self_check is None:
            return {}
        return {
            "check-reconstructor": self.self_check.checker.name,
            "check-threshold": self.self_check.threshold,
            "check-draws": self.self_check.draws,
        }

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Pool every valid reply's features (replacing that client's earlier ones) and refine phi2 on the pool.

        The round's metrics count accepted, rejected and withheld replies (a client whose DPM
        failed its self-check) and average the accepted clients' :data:`CLIENT_METRICS`.
        """
        accepted, rejected, withheld = 0, 0, 0
        client_metrics: dict[str, list[float]] = {}
        for reply in replies:
            if reply.has_error():
                withheld += reply.error.code == SELF_CHECK_FAILED
                continue  # Flower logged it; Recorded counts it
            try:
                self.pool[reply.metadata.src_node_id] = self.parse_reply(reply)
                accepted += 1
                reported = reply.content.metric_records.get("metrics", MetricRecord())
                for key in CLIENT_METRICS:
                    if isinstance(reported.get(key), (int, float)):
                        client_metrics.setdefault(key, []).append(float(cast(float, reported[key])))
            except InvalidReplyError as error:
                rejected += 1
                log(
                    WARNING,
                    "round %d: rejected the reply of node %d: %s",
                    server_round,
                    reply.metadata.src_node_id,
                    error,
                )
        self.rejected[server_round] = rejected
        self.withheld[server_round] = withheld
        metrics = MetricRecord(
            {
                "accepted": accepted,
                "rejected": rejected,
                "withheld": withheld,
                "pooled-clients": len(self.pool),
                **{key: sum(values) / len(values) for key, values in client_metrics.items()},
            }
        )
        if not self.pool:
            return None, metrics
        # Node ids and reply order change from run to run; pooling in content order keeps
        # refinement (and so the whole run) reproducible from the seed.
        entries = sorted(self.pool.values(), key=_content_digest)
        features = torch.cat([features for features, _ in entries])
        labels = torch.cat([labels for _, labels in entries])
        metrics["pooled-features"] = len(labels)
        metrics["refine-loss"] = self.refine(features, labels)
        return ArrayRecord(self.model.state_dict()), metrics

    def parse_reply(self, reply: Message) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(features, labels)`` of a reply, or :class:`InvalidReplyError` saying what is wrong with it."""
        record = reply.content.array_records.get(FEATURES_KEY)
        if record is None or set(record) != {"features", "labels"}:
            found = sorted(record) if record is not None else sorted(reply.content.array_records)
            raise InvalidReplyError(f"expected array record {FEATURES_KEY!r} with 'features' and 'labels', got {found}")
        features, labels = record["features"], record["labels"]
        if features.dtype not in ("float16", "float32") or tuple(features.shape[1:]) != self.feature_shape:
            raise InvalidReplyError(
                f"features must be float16/float32 of shape (n, {', '.join(map(str, self.feature_shape))}), "
                f"got {features.dtype} {tuple(features.shape)}"
            )
        if labels.dtype != "int64" or tuple(labels.shape) != (features.shape[0],):
            raise InvalidReplyError(
                f"labels must be int64 of shape ({features.shape[0]},), got {labels.dtype} {labels.shape}"
            )
        feature_values = torch.from_numpy(_to_numpy(features)).float()
        label_values = torch.from_numpy(_to_numpy(labels))
        if not torch.isfinite(feature_values).all():
            raise InvalidReplyError("features contain NaN or infinite values")
        if len(label_values) and (label_values.min() < 0 or label_values.max() >= self.num_classes):
            raise InvalidReplyError(
                f"labels must lie in [0, {self.num_classes}), got [{label_values.min()}, {label_values.max()}]"
            )
        return feature_values.half(), label_values

    def refine(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Train phi2 on the pooled features with cross-entropy (Adam); return the mean loss of the last epoch."""
        return train_decider(
            self.split.decider,
            features,
            labels,
            epochs=self.refine_epochs,
            batch_size=self.refine_batch_size,
            learning_rate=self.refine_learning_rate,
            generator=self.generator,
        )


def _content_digest(entry: tuple[torch.Tensor, torch.Tensor]) -> bytes:
    """SHA-256 of a pooled ``(features, labels)`` entry: an order for the pool that does not depend on node ids."""
    features, labels = entry
    return hashlib.sha256(labels.numpy().tobytes() + features.numpy().tobytes()).digest()


def _to_numpy(array: Array) -> np.ndarray:
    return cast(np.ndarray, array.numpy())
