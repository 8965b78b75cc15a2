"""The client side of feature sharing with a Deep Poisoning Module (Guo et al., §4).

A client receives Phi (split at the hook the server names), the reconstructor psi and any
further straw men, trains its own DPM P against them (Eq. 3), keeps P in ``context.state`` so
later rounds continue from it, and replies with ``P(phi1 x)`` in float16 and the labels of a
seeded sample of its partition. Neither its images nor P (weights, optimizer, seed) are in the
reply.

When the server also sends a check reconstructor, the client checks P on its own images
before it shares (:mod:`~flwr_privshare.poisoning.self_check`): a P that fails is replaced by
a fresh draw, and if every draw fails the client replies with an error and shares nothing.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from ..config import CommonSection, RunConfig
from ..data.export import node_partition
from ..models import build_model
from ..poisoning import (
    DeepPoisoningModule,
    DPMTrainingResult,
    Reconstructor,
    SelfCheck,
    SplitModel,
    feature_shape,
    poisoned_features,
    split_model,
    train_checked_dpm,
    train_dpm,
)
from ..poisoning.procedures import shared_sample
from ..poisoning.section import DPMSection
from ..protocol import (
    ARRAYS_KEY,
    CHECK_RECONSTRUCTOR_KEY,
    CONFIG_KEY,
    ENSEMBLE_KEY,
    FEATURES_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    PARTITION_ID,
    RECONSTRUCTOR_KEY,
    SELF_CHECK_FAILED,
    SERVER_ROUND,
    WARMUP_KEY,
)
from ..seeding import derive_seed, seeded
from ..train import get_device

DPM_STATE_KEY = "deep-poisoning-module"


def share_poisoned_features(run: RunConfig, msg: Message, context: Context) -> Message:
    """Train (or continue) this client's DPM and reply with poisoned features and labels."""
    common = run[CommonSection]
    settings = msg.content.config_records[CONFIG_KEY]
    partition_id = int(context.node_config["partition-id"])
    data = node_partition(common, context)
    model = build_model(str(settings["model"]), data.num_classes)
    model.load_state_dict(msg.content.array_records[ARRAYS_KEY].to_torch_state_dict())
    split = split_model(model, str(settings["hook"]))
    shape = feature_shape(split.featurizer, data.image_shape)
    reconstructor = Reconstructor(str(settings["reconstructor"]), shape, data.image_shape)
    reconstructor.load_state_dict(msg.content.array_records[RECONSTRUCTOR_KEY].to_torch_state_dict())
    ensemble = received_ensemble(msg, settings, shape, data.image_shape)

    stored = context.state.array_records.get(DPM_STATE_KEY)
    server_round = cast(int, settings[SERVER_ROUND])
    device = get_device()

    def train_draw(draw: int) -> tuple[DeepPoisoningModule, DPMTrainingResult]:
        # Draw 0 continues the stored P; a redraw starts fresh from a seed of its own.
        redraw = ("redraw", server_round, draw) if draw else ()
        with seeded(derive_seed(common.seed, "dpm-init", partition_id, *redraw)):
            dpm = DeepPoisoningModule(shape[0])
        if stored is not None and not draw:
            dpm.load_state_dict(stored.to_torch_state_dict())
            warmup = 0
        else:  # a fresh P warms up first: no P shares after fewer than dpm-epochs + warm-up epochs
            warmup = int(cast(int, settings.get(WARMUP_KEY, 0)))
        result = train_dpm(
            dpm,
            split,
            reconstructor,
            data,
            ssim_weight=float(cast(float, settings["ssim-weight"])),
            epochs=warmup + int(cast(int, settings["dpm-epochs"])),
            feature_noise=float(cast(float, settings["feature-noise"])),
            ensemble=ensemble,
            batch_size=common.batch_size,
            learning_rate=run[DPMSection].dpm_learning_rate,
            device=device,
            generator=torch.Generator().manual_seed(
                derive_seed(common.seed, "dpm", partition_id, server_round, *redraw)
            ),
        )
        return dpm, result

    self_check = received_self_check(msg, settings, split, data.image_shape)
    checked = train_checked_dpm(train_draw, split, self_check, data, device=device)
    dpm, result = checked.dpm, checked.training
    context.state[DPM_STATE_KEY] = ArrayRecord(dpm.cpu().state_dict())
    if self_check is not None and not checked.passed:
        reason = (
            f"DPM self-check failed on all {checked.draws} draws (last |SSIM| {abs(checked.check_ssim):.3f} > "
            f"{self_check.threshold}); no features shared this round"
        )
        return Message(Error(SELF_CHECK_FAILED, reason), reply_to=msg)

    count = int(cast(int, settings["shared-samples"]))
    shared = data.subset(shared_sample(common.seed, partition_id, server_round, count, len(data)))
    features = poisoned_features(split.featurizer, dpm, shared, device=device)
    payload = ArrayRecord({"features": Array(features.numpy()), "labels": Array(shared.labels.numpy())})
    metrics = MetricRecord(
        {
            NUM_EXAMPLES: len(shared),
            PARTITION_ID: partition_id,
            "dpm-cross-entropy": result.cross_entropy,
            "dpm-ssim": result.ssim,  # SSIM(psi(P(phi1 x)), x) on this client's own images
            "dpm-draws": checked.draws,
            **({} if math.isnan(checked.check_ssim) else {"dpm-check-ssim": checked.check_ssim}),
        }
    )
    return Message(content=RecordDict({FEATURES_KEY: payload, METRICS_KEY: metrics}), reply_to=msg)


def received_ensemble(
    msg: Message, settings: ConfigRecord, shape: tuple[int, int, int], image_shape: tuple[int, int, int]
) -> list[Reconstructor]:
    """The further straw men the server sent (none when it sent no ensemble)."""
    names = [name for name in str(settings.get(ENSEMBLE_KEY, "")).split(",") if name]
    ensemble = []
    for index, name in enumerate(names):
        member = Reconstructor(name, shape, image_shape)
        member.load_state_dict(msg.content.array_records[f"{ENSEMBLE_KEY}-{index}"].to_torch_state_dict())
        ensemble.append(member)
    return ensemble


def received_self_check(
    msg: Message, settings: ConfigRecord, split: SplitModel, image_shape: tuple[int, int, int]
) -> SelfCheck | None:
    """The self-check the server asks for (checker weights and settings), or None."""
    record = msg.content.array_records.get(CHECK_RECONSTRUCTOR_KEY)
    if record is None:
        return None
    checker = Reconstructor(
        str(settings["check-reconstructor"]), feature_shape(split.featurizer, image_shape), image_shape
    )
    checker.load_state_dict(record.to_torch_state_dict())
    return SelfCheck(checker, float(cast(float, settings["check-threshold"])), int(cast(int, settings["check-draws"])))
