"""The project's models: shapes, and Opacus accepts them as they are."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from flwr_privshare.models import build_model, model_name_for


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("cifar-cnn", (3, 32, 32)),
        ("mnist-cnn", (1, 28, 28)),
        ("faces-cnn", (1, 112, 92)),
        ("cifar-resnet", (3, 32, 32)),
    ],
)
def test_models_classify_their_images_and_are_opacus_compatible(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, num_classes=7)
    assert model(torch.rand((5, *shape))).shape == (5, 7)
    assert ModuleValidator.validate(model, strict=True) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model_name_for(shape) == name.replace("resnet", "cnn")  # the CNNs are the defaults


def test_unknown_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("resnet")
