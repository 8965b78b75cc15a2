"""Client-side DP-SGD with Opacus, with an accountant whose history survives between rounds.

DP-SGD (Abadi et al., 2016, https://arxiv.org/abs/1607.00133) clips every example's gradient
to ``max_grad_norm``, adds Gaussian noise of std ``noise_multiplier * max_grad_norm`` to the
sum and samples batches by Poisson sampling. Opacus's ``PrivacyEngine`` does all three.

Flower's ``examples/opacus`` creates a new ``PrivacyEngine`` every round, so the epsilon it
reports covers one round. Here the accountant's history ``[(noise_multiplier, sample_rate,
steps), ...]`` is passed in and returned, and the ClientApp keeps it in ``context.state``
(:func:`history_to_record` / :func:`history_from_record`), so the epsilon a client reports is
cumulative over every round it took part in. The accountant is named explicitly (Opacus
1.6 defaults to PRV).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

import torch
from flwr.app import ConfigRecord
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data import ImageDataset
from ..recipe import Recipe
from ..train import make_optimizer
from .opacus_logging import drop_opacus_root_handler
from .section import ACCOUNTANTS

drop_opacus_root_handler()

logger = logging.getLogger(__name__)

GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew", "ghost")
DEFAULT_GRAD_SAMPLE_MODE = "ew"  # fastest for the project's CNNs on CPU (benchmarks/dp_overhead.py)
History = list[tuple[float, float, int]]


@dataclass(frozen=True)
class DPSGDResult:
    """What one round of DP-SGD returns: the mean loss, the cumulative history and its epsilon."""

    loss: float
    history: History
    epsilon: float


def make_private_compatible(model: nn.Module) -> nn.Module:
    """Return ``model`` if Opacus accepts it, else a fixed copy (BatchNorm -> GroupNorm), logged."""
    errors = ModuleValidator.validate(model, strict=False)
    if not errors:
        return model
    logger.warning(
        "Opacus cannot train %s as is (%s); replacing it with ModuleValidator.fix", type(model).__name__, errors
    )
    return ModuleValidator.fix(model)


def train_dp_sgd(
    model: nn.Module,
    data: ImageDataset,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
    history: History,
    device: torch.device,
    seed: int,
    accountant: str = "rdp",
    grad_sample_mode: str = DEFAULT_GRAD_SAMPLE_MODE,
    recipe: Recipe | None = None,
    augmentation_multiplicity: int = 1,
) -> DPSGDResult:
    """Train ``model`` in place with DP-SGD; continue the accountant from ``history``.

    Args:
        model: an Opacus-compatible model (see :func:`make_private_compatible`).
        data: the client's training data.
        epochs: local epochs; the expected batch size is ``batch_size`` under Poisson sampling.
        optimizer: see :func:`~flwr_privshare.train.make_optimizer`.
        noise_multiplier: Opacus's ``noise_multiplier`` (noise std / ``max_grad_norm``).
        max_grad_norm: per-example gradient clipping norm.
        delta: the delta of the reported epsilon.
        history: the accountant history of earlier rounds (empty for the first).
        seed: seeds Poisson sampling and the noise.
        accountant: "rdp" or "prv".
        grad_sample_mode: how Opacus gets per-example gradients: "ew" (expanded weights,
            the default: as fast as plain training for these CNNs on CPU in
            ``benchmarks/dp_overhead.py``), "hooks" (0.7x), "ghost" (ghost clipping, no
            per-example gradients; 0.65x) or "functorch" (0.57x).
        recipe: augmentation, learning-rate schedule and label smoothing (see
            :func:`~flwr_privshare.train.train`); none of them touches the privacy analysis.
        augmentation_multiplicity: K augmented copies of every sampled example, whose
            gradients are averaged before clipping (De et al. 2022, Section 3.1). Each example
            still contributes one clipped gradient per step, so the accountant's sampling
            rate and steps, and hence epsilon, are those of plain DP-SGD. Needs per-example
            gradients (not ``"ghost"``) and an active augmentation when K > 1.
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}")
    recipe = recipe or Recipe()
    if augmentation_multiplicity < 1:
        raise ValueError(f"augmentation_multiplicity must be a positive integer, got {augmentation_multiplicity!r}")
    if augmentation_multiplicity > 1 and (grad_sample_mode == "ghost" or not recipe.augmentation.active):
        raise ValueError(
            "augmentation_multiplicity > 1 needs per-example gradients (grad_sample_mode other than 'ghost') "
            f"and an active augmentation; got mode {grad_sample_mode!r} and {recipe.augmentation}"
        )
    model.to(device).train()
    loader = DataLoader(
        TensorDataset(data.images, data.labels),
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    engine = PrivacyEngine(accountant=accountant)
    engine.accountant.history = list(history)
    criterion: nn.Module = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    private = engine.make_private(
        module=model,
        optimizer=make_optimizer(optimizer, model.parameters(), learning_rate),
        criterion=criterion,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=True,
        noise_generator=torch.Generator(device=device).manual_seed(seed + 1),
        grad_sample_mode=grad_sample_mode,
    )
    if grad_sample_mode == "ghost":  # ghost clipping also returns a loss that does the clipping
        private_model, private_optimizer, criterion, private_loader = private
    else:
        private_model, private_optimizer, private_loader = private
    scheduler = recipe.scheduler(private_optimizer, epochs, len(private_loader))
    augment_generator = torch.Generator().manual_seed(seed + 2)
    total_loss, total_count = 0.0, 0
    for _ in range(epochs):
        for batch_images, batch_labels in private_loader:
            private_optimizer.zero_grad(set_to_none=True)
            images, labels = batch_images.to(device), batch_labels.to(device)
            if augmentation_multiplicity > 1:
                images = images.repeat_interleave(augmentation_multiplicity, dim=0)
                labels = labels.repeat_interleave(augmentation_multiplicity, dim=0)
            images = recipe.augmentation(images, augment_generator).float().div_(255.0)
            loss = criterion(private_model(images), labels)
            loss.backward()
            if augmentation_multiplicity > 1:
                average_over_copies(private_optimizer.params, augmentation_multiplicity)
            private_optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(batch_labels)
            total_count += len(batch_labels)
    private_model.to_standard_module()  # remove Opacus's hooks and per-sample gradients from `model`
    new_history = [(float(z), float(q), int(t)) for z, q, t in engine.accountant.history]
    return DPSGDResult(total_loss / max(total_count, 1), new_history, float(engine.get_epsilon(delta)))


def average_over_copies(params: list[nn.Parameter], copies: int) -> None:
    """Replace every ``p.grad_sample`` of ``B * copies`` rows by the mean over each example's copies.

    The rows are example-major (``repeat_interleave``), so row ``b * copies + k`` is copy ``k``
    of example ``b``. With a mean loss over the ``B * copies`` rows Opacus scales each row's
    gradient to that row's own loss gradient, so the mean over copies is the example's
    gradient averaged over its augmentations, which DP-SGD then clips (De et al. 2022, Eq. 2).
    """
    for param in params:
        grad_sample = getattr(param, "grad_sample", None)
        if grad_sample is not None:
            param.grad_sample = grad_sample.view(-1, copies, *grad_sample.shape[1:]).mean(dim=1)  # type: ignore[attr-defined]


def rebuilt_history(
    rounds: int, num_examples: int, *, batch_size: int, epochs: int, noise_multiplier: float
) -> History:
    """The accountant history after ``rounds`` rounds of :func:`train_dp_sgd` on ``num_examples`` rows.

    For a resumed run, whose clients start with an empty ``context.state``: every round
    takes ``epochs * len(loader)`` steps at Opacus's sample rate ``1 / len(loader)`` with the
    same noise multiplier, and Opacus's accountants merge equal consecutive entries, so the
    history is one entry. The loader is built as :func:`train_dp_sgd` builds it.
    """
    if rounds <= 0:
        return []
    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(torch.zeros(num_examples)), batch_size=batch_size))
    return [(float(noise_multiplier), float(loader.sample_rate), rounds * epochs * len(loader))]


def history_to_record(history: History, accountant: str) -> ConfigRecord:
    """Store an accountant history in a ``ConfigRecord`` (parallel lists; records take no tuples)."""
    return ConfigRecord(
        {
            "noise-multiplier": [z for z, _, _ in history],
            "sample-rate": [q for _, q, _ in history],
            "steps": [t for _, _, t in history],
            "accountant": accountant,
        }
    )


def history_from_record(record: ConfigRecord) -> History:
    """The inverse of :func:`history_to_record`."""
    noise = cast(list[float], record["noise-multiplier"])
    rates = cast(list[float], record["sample-rate"])
    steps = cast(list[int], record["steps"])
    return [(float(z), float(q), int(t)) for z, q, t in zip(noise, rates, steps, strict=True)]
