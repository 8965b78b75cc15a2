"""Cut a classifier Phi into featurizer phi1 and decider phi2 at a named hook point (DPM, Guo et al. §3).

The two halves share the classifier's modules: training the decider trains the
classifier, and ``Phi(x) == phi2(phi1(x))`` for every input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..models import ImageClassifier


class SplitModel(NamedTuple):
    """``featurizer`` (phi1: images -> features) and ``decider`` (phi2: features -> logits)."""

    featurizer: nn.Sequential
    decider: nn.Sequential


def split_model(model: ImageClassifier, hook: str) -> SplitModel:
    """Split ``model`` after hook point ``hook`` (one of ``model.hook_points``).

    Raises:
        ValueError: ``hook`` is not a hook point of ``model``.
    """
    points = model.hook_points
    if hook not in points:
        raise ValueError(f"hook must be one of {tuple(points)} for {type(model).__name__}, got {hook!r}")
    stages = list(model.features)
    cut = points[hook]
    featurizer = nn.Sequential(*stages[:cut])
    decider = nn.Sequential(*stages[cut:], model.pool, nn.Flatten(1), model.classifier)
    return SplitModel(featurizer, decider)


@torch.no_grad()
def feature_shape(featurizer: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``(C, H, W)`` shape ``featurizer`` gives an image of ``image_shape``."""
    was_training = featurizer.training
    featurizer.eval()
    device = next(featurizer.parameters()).device
    shape = featurizer(torch.zeros((1, *image_shape), device=device)).shape[1:]
    featurizer.train(was_training)
    return (int(shape[0]), int(shape[1]), int(shape[2]))
