"""Oracle recognition (DESIGN 5.8): can a classifier trained on plain images recognise protected ones?

A classifier is trained on the server's plain public split and shown the protected
images. Accuracy near chance means the protection hides the content from machines;
accuracy equal to that on plain images means nothing is hidden. It is cheap, works for
every protection that changes images, and is reported beside every utility number. A run
whose clients train on plain images (no protection, DP-SGD, DP-FedAvg) gets it too: its
recognition is the oracle's plain accuracy, so every row of a table has the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from logging import INFO
from typing import Any

import torch

from ..config.checks import NON_NEGATIVE_INT
from ..config.common import CommonSection
from ..config.section import Section, setting
from ..data import ImageDataset
from ..models import ImageClassifier, build_model
from ..seeding import derive_seed
from ..train import evaluate, get_device, train
from .base import Attack, FinishedRun, register_attack


def train_oracle(
    public: ImageDataset,
    *,
    model_name: str,
    epochs: int,
    seed: int,
    device: torch.device,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
) -> ImageClassifier:
    """A classifier trained with Adam on the labelled ``public`` images (``seed`` fixes its initialisation
    and batch order): the oracle of every recognition measurement."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        oracle = build_model(model_name, public.num_classes)
    train(
        oracle,
        public,
        epochs=epochs,
        batch_size=batch_size,
        optimizer="adam",
        learning_rate=learning_rate,
        device=device,
        generator=torch.Generator().manual_seed(seed),
        progress=f"oracle ({epochs} epochs on {len(public)} public images)",
    )
    return oracle.eval()


def oracle_recognition(
    public: ImageDataset,
    targets: Mapping[str, ImageDataset],
    *,
    model_name: str,
    epochs: int,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """Train an oracle on plain ``public`` images (:func:`train_oracle`); return its accuracy on each target set.

    Args:
        public: plain labelled images the attacker (or auditor) holds.
        targets: named evaluation sets, e.g. ``{"plain": test, "mixed": mixed_test}``.
        model_name: architecture of the oracle (see :func:`~flwr_privshare.models.build_model`).
        epochs: training epochs (Adam).
        seed: seeds the oracle's initialisation and batch order.
        device: where to train.
    """
    oracle = train_oracle(public, model_name=model_name, epochs=epochs, seed=seed, device=device)
    return {name: evaluate(oracle, data, device=device)[1] for name, data in targets.items()}


@dataclass(frozen=True)
class OracleSection(Section):
    """Oracle recognition: a classifier trained on the plain public split, shown the protected test images."""

    title = "Oracle"

    oracle_epochs: int = setting(3, "epochs of the oracle (0: skip it)", NON_NEGATIVE_INT)


@register_attack
class OracleRecognition(Attack):
    """Runs whenever ``oracle-epochs`` > 0; ``recognition`` is on the primary (protected) view, ``plain`` when
    nothing changes images, and ``views`` has the accuracy on every test set (for MDP, ``mdp-selected`` and
    ``mdp-target``: how often the oracle sees the selected image's class or the target's)."""

    name = "oracle"
    section = OracleSection

    def applies(self, finished: FinishedRun) -> bool:
        return OracleSection in finished.run and finished.run[OracleSection].oracle_epochs > 0

    def run(self, finished: FinishedRun) -> dict[str, Any]:
        from flwr.common import log

        primary = next(iter(finished.test_sets))
        log(INFO, "oracle recognition: training the oracle on the public split")
        accuracies = oracle_recognition(
            finished.public,
            finished.test_sets,
            model_name=finished.model_name,
            epochs=finished.run[OracleSection].oracle_epochs,
            seed=derive_seed(finished.run[CommonSection].seed, "oracle"),
            device=get_device(),
        )
        return {
            "plain_accuracy": accuracies["plain"],
            "recognition": accuracies[primary],
            "view": primary,
            "views": accuracies,
        }
