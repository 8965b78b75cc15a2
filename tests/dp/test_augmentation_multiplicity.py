"""DP-SGD with augmentation multiplicity (De et al. 2022): per-example gradients averaged over K copies."""

from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.grad_sample.utils import wrap_model
from torch import nn

from flwr_privshare.config import ConfigError
from flwr_privshare.data import ImageDataset
from flwr_privshare.dp import train_dp_sgd
from flwr_privshare.dp.dpsgd import average_over_copies
from flwr_privshare.models import build_model
from flwr_privshare.protections.dp_sgd import DPSGDProtection
from flwr_privshare.recipe import Augmentation, Recipe

from ..experiments import DP

CROP_FLIP = Recipe(augmentation=Augmentation.named("crop-flip", 2))


@pytest.fixture(scope="module")
def tiny_data(cifar_test: ImageDataset) -> ImageDataset:
    return ImageDataset(cifar_test.images[:96, :1, 2:30, 2:30].contiguous(), cifar_test.labels[:96], 10)


def dp_round(data: ImageDataset, multiplicity: int, recipe: Recipe = CROP_FLIP, mode: str = "ew"):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return train_dp_sgd(
        build_model("mnist-cnn"), data, epochs=1, batch_size=16, optimizer="sgd", learning_rate=0.05,
        noise_multiplier=1.2, max_grad_norm=1.0, delta=1e-5, history=[], device=torch.device("cpu"), seed=0,
        recipe=recipe, augmentation_multiplicity=multiplicity, grad_sample_mode=mode,
    )  # fmt: skip


def test_multiplicity_keeps_the_true_sampling_rate_and_epsilon(tiny_data: ImageDataset) -> None:
    single, multiple = dp_round(tiny_data, 1), dp_round(tiny_data, 4)
    assert multiple.history == single.history == [(1.2, 16 / 96, 6)]  # q = expected batch / n, 96 / 16 steps
    accountant = RDPAccountant()
    accountant.history = [(1.2, 16 / 96, 6)]
    assert multiple.epsilon == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-9)
    assert multiple.loss != single.loss  # the copies were trained on


@pytest.mark.parametrize("mode", ["hooks", "ew", "functorch"])
def test_the_averaged_per_example_gradient_is_the_mean_over_copies(mode: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    examples, copies = 3, 2
    inputs = torch.randn(examples * copies, 1, 8, 8)
    labels = torch.tensor([0, 1, 2]).repeat_interleave(copies)
    expected = []  # per example: the mean over its copies of each copy's own loss gradient
    for example in range(examples):
        grads = [
            torch.autograd.grad(
                nn.functional.cross_entropy(model(inputs[row : row + 1]), labels[row : row + 1]),
                list(model.parameters()),
            )
            for row in range(example * copies, (example + 1) * copies)
        ]
        expected.append([torch.stack(parts).mean(0) for parts in zip(*grads, strict=True)])
    wrapped = wrap_model(model, grad_sample_mode=mode)
    nn.functional.cross_entropy(wrapped(inputs), labels).backward()
    params = [p for p in model.parameters()]
    average_over_copies(params, copies)
    for index, param in enumerate(params):
        assert param.grad_sample.shape[0] == examples  # type: ignore[attr-defined]
        for example in range(examples):
            assert torch.allclose(param.grad_sample[example], expected[example][index], atol=1e-6)  # type: ignore[attr-defined]


def test_multiplicity_needs_an_augmentation_and_per_example_gradients(tiny_data: ImageDataset) -> None:
    with pytest.raises(ValueError, match="needs per-example gradients"):
        dp_round(tiny_data, 2, recipe=Recipe())
    with pytest.raises(ValueError, match="needs per-example gradients"):
        dp_round(tiny_data, 2, mode="ghost")
    run = DP.schema.parse({"protection": "dp-sgd", "augmentation": "auto", "augmentation-multiplicity": 4})
    DPSGDProtection(run).check_data((3, 32, 32))
    with pytest.raises(
        ConfigError, match="'augmentation-multiplicity' is 4; it must be 1 when the augmentation is off"
    ):
        DPSGDProtection(run).check_data((1, 28, 28))  # auto: none on grayscale
