"""Hook points cut every project model into featurizer and decider that compose back to it."""

from __future__ import annotations

import pytest
import torch

from flwr_privshare.models import build_model
from flwr_privshare.poisoning import feature_shape, split_model

SHAPES = {"cifar-cnn": (3, 32, 32), "mnist-cnn": (1, 28, 28), "cifar-resnet": (3, 32, 32)}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_hook_point_splits_the_model_into_parts_that_compose_back(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    images = torch.rand((4, *SHAPES[name]))
    for hook in model.hook_points:
        featurizer, decider = split_model(model, hook)
        features = featurizer(images)
        assert features.shape[1:] == feature_shape(featurizer, SHAPES[name])
        torch.testing.assert_close(decider(features), model(images))


def test_the_decider_shares_the_classifier_parameters() -> None:
    model = build_model("cifar-cnn")
    _, decider = split_model(model, "pool1")
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    assert decider[-1].bias is model.classifier.bias


def test_the_resnet_hooks_are_deeper_than_one_block() -> None:
    model = build_model("cifar-resnet")
    featurizer, _ = split_model(model, "stage1")
    convs = [m for m in featurizer.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5  # stem + 2 residual blocks of 2 convs
    assert feature_shape(featurizer, (3, 32, 32)) == (32, 32, 32)


def test_unknown_hook_point_is_rejected_with_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"hook must be one of \('block1', 'pool1'.*got 'layer9'"):
        split_model(build_model("cifar-cnn"), "layer9")
