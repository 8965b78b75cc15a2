"""Oracle recognition (DESIGN 5.8): can a classifier trained on plain images recognise protected ones?

A classifier is trained on the server's plain public split and shown the protected
images. Accuracy near chance means the protection hides the content from machines;
accuracy equal to that on plain images means nothing is hidden. It is cheap, works for
every protection, and is reported beside every utility number.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..data import ImageDataset
from ..models import build_model
from ..train import evaluate, train


def oracle_recognition(
    public: ImageDataset,
    targets: Mapping[str, ImageDataset],
    *,
    model_name: str,
    epochs: int,
    seed: int,
    device: torch.device,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
) -> dict[str, float]:
    """Train an oracle on plain ``public`` images; return its accuracy on each target set.

    Args:
        public: plain labelled images the attacker (or auditor) holds.
        targets: named evaluation sets, e.g. ``{"plain": test, "mixed": mixed_test}``.
        model_name: architecture of the oracle (see :func:`~flwr_privshare.models.build_model`).
        epochs: training epochs (Adam).
        seed: seeds the oracle's initialisation and batch order.
        device: where to train.
    """
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
    )
    return {name: evaluate(oracle, data, device=device)[1] for name, data in targets.items()}
