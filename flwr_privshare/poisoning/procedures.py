"""Procedures of the DPM experiment that the app, the reconstruction audit and the benchmarks share.

Each follows the clients' or the server's procedure of ``simulations/dpm_cifar`` from a run
config (the common and the DPM sections), with seeds derived from the run seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import INFO

import torch
from flwr.common import log

from ..config import CommonSection, RunConfig
from ..data import ImageDataset
from ..models import ImageClassifier
from ..seeding import derive_seed, seeded
from ..train import get_device, train
from .dpm import DeepPoisoningModule, DPMTrainingResult, train_dpm
from .reconstructor import RECONSTRUCTORS, Reconstructor, train_reconstructor
from .section import DPMSection
from .self_check import CheckedDPM, SelfCheck, train_checked_dpm
from .split import SplitModel, feature_shape


def bootstrap_on_public(run: RunConfig, model: ImageClassifier, public: ImageDataset) -> None:
    """Train Phi on the public split (``dpm-bootstrap = "server"``)."""
    train(
        model,
        public,
        epochs=run[DPMSection].dpm_bootstrap_epochs,
        batch_size=run[CommonSection].batch_size,
        optimizer=run[CommonSection].optimizer,
        learning_rate=run[CommonSection].learning_rate,
        device=get_device(),
        generator=torch.Generator().manual_seed(derive_seed(run[CommonSection].seed, "bootstrap")),
    )


def train_reconstructors(
    run: RunConfig, split: SplitModel, public: ImageDataset, shape: tuple[int, int, int]
) -> dict[str, Reconstructor]:
    """Every reconstructor, trained with L1 on the public split only."""
    return {name: train_public_reconstructor(run, name, split, public, shape) for name in RECONSTRUCTORS}


def train_public_reconstructor(
    run: RunConfig,
    name: str,
    split: SplitModel,
    public: ImageDataset,
    shape: tuple[int, int, int],
    instance: int = 0,
) -> Reconstructor:
    """Reconstructor ``name``, trained with L1 on the public split, from seeds of its own.

    ``instance`` > 0 gives further instances of the same architecture, each from other seeds.
    """
    stream = (name,) if instance == 0 else (name, instance)
    with seeded(derive_seed(run[CommonSection].seed, "reconstructor-init", *stream)):
        reconstructor = Reconstructor(name, shape, public.image_shape)
    l1 = train_reconstructor(
        reconstructor,
        split.featurizer,
        public,
        epochs=run[DPMSection].reconstructor_epochs,
        device=get_device(),
        generator=torch.Generator().manual_seed(derive_seed(run[CommonSection].seed, "reconstructor", *stream)),
    )
    log(INFO, "reconstructor %s (instance %d) trained on the public split: L1 %.4f", name, instance, l1)
    return reconstructor


def ensemble_for(
    run: RunConfig, split: SplitModel, public: ImageDataset, shape: tuple[int, int, int]
) -> list[Reconstructor]:
    """The further straw men of ``dpm-ensemble``, trained on the public split (none by default).

    ``dpm-ensemble-instances`` instances of each architecture, architecture by architecture.
    """
    return [
        train_public_reconstructor(run, name, split, public, shape, instance)
        for name in run[DPMSection].ensemble_names
        for instance in range(run[DPMSection].dpm_ensemble_instances)
    ]


def self_check_for(
    run: RunConfig, split: SplitModel, public: ImageDataset, shape: tuple[int, int, int]
) -> SelfCheck | None:
    """The clients' self-check of ``run`` with its checker trained on the public split, or None when off."""
    if not run[DPMSection].dpm_check_reconstructor:
        return None
    checker = train_public_reconstructor(run, run[DPMSection].dpm_check_reconstructor, split, public, shape)
    return SelfCheck(checker, run[DPMSection].dpm_check_threshold, run[DPMSection].dpm_check_draws)


def train_stand_in_dpm(
    run: RunConfig,
    split: SplitModel,
    straw_man: Reconstructor,
    data: ImageDataset,
    *,
    ssim_weight: float,
    ensemble: Sequence[Reconstructor] = (),
    self_check: SelfCheck | None = None,
    stream: tuple[object, ...] = (),
    rounds: int | None = None,
) -> CheckedDPM:
    """A DPM trained like a client's, on ``data``, for as many epochs as a client that took part in ``rounds``
    rounds (default: every round of ``run``), its warm-up included.

    It trains against ``straw_man`` and the clients' ``ensemble``. With ``self_check``, a draw
    that fails the check is replaced by a fresh one, as a client does. ``stream`` extends the
    seed labels, for several stand-ins from one run seed (the audit uses none).
    """
    shape = feature_shape(split.featurizer, data.image_shape)

    def train_draw(draw: int) -> tuple[DeepPoisoningModule, DPMTrainingResult]:
        labels = (*stream, "redraw", draw) if draw else stream
        with seeded(derive_seed(run[CommonSection].seed, "audit-dpm-init", *labels)):
            dpm = DeepPoisoningModule(shape[0])
        training = train_dpm(
            dpm,
            split,
            straw_man,
            data,
            ssim_weight=ssim_weight,
            feature_noise=run[DPMSection].dpm_feature_noise,
            ensemble=ensemble,
            epochs=run[DPMSection].dpm_warmup_epochs
            + run[DPMSection].dpm_epochs * (rounds or run[CommonSection].num_server_rounds),
            batch_size=run[CommonSection].batch_size,
            learning_rate=run[DPMSection].dpm_learning_rate,
            device=get_device(),
            generator=torch.Generator().manual_seed(derive_seed(run[CommonSection].seed, "audit-dpm", *labels)),
        )
        return dpm, training

    return train_checked_dpm(train_draw, split, self_check, data, device=get_device())


def shared_sample(seed: int, partition_id: int, server_round: int, count: int, size: int) -> torch.Tensor:
    """Which of a client's ``size`` partition rows it shares features of in ``server_round`` (``count``; 0: all).

    A seeded draw of its own per client and round, so the server's membership ground truth
    can be recomputed from the run seed (the rows never leave the client).
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "dpm-share", partition_id, server_round))
    return torch.randperm(size, generator=generator)[: min(count or size, size)]
