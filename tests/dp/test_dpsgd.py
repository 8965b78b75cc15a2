"""Client DP-SGD: the accountant's history accumulates across rounds and matches Opacus."""

from __future__ import annotations

import logging

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from flwr_privshare.data import ImageDataset
from flwr_privshare.dp import history_from_record, history_to_record, make_private_compatible, train_dp_sgd
from flwr_privshare.models import build_model


@pytest.fixture(scope="module")
def tiny_data(cifar_test: ImageDataset) -> ImageDataset:
    mnist_like = cifar_test.images[:96, :1, 2:30, 2:30].contiguous()  # 1x28x28 crops of real images
    return ImageDataset(mnist_like, cifar_test.labels[:96], 10)


def one_round(data: ImageDataset, history: list[tuple[float, float, int]], seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return train_dp_sgd(
        build_model("mnist-cnn"),
        data,
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        learning_rate=0.05,
        noise_multiplier=1.2,
        max_grad_norm=1.0,
        delta=1e-5,
        history=history,
        device=torch.device("cpu"),
        seed=seed,
    )


def reference_epsilon(steps: int) -> float:
    accountant = RDPAccountant()
    accountant.history = [(1.2, 16 / 96, steps)]
    return float(accountant.get_epsilon(delta=1e-5))


def test_epsilon_accumulates_over_the_rounds_a_client_takes_part_in(tiny_data: ImageDataset) -> None:
    history: list[tuple[float, float, int]] = []
    epsilons = []
    for taken_part in range(1, 4):
        result = one_round(tiny_data, history, seed=taken_part)
        history = history_from_record(history_to_record(result.history, "rdp"))  # what context.state keeps
        assert sum(steps for _, _, steps in history) == 6 * taken_part  # 96 / 16 steps per epoch
        assert result.epsilon == pytest.approx(reference_epsilon(6 * taken_part), abs=1e-6)
        epsilons.append(result.epsilon)
    assert epsilons == sorted(epsilons) and epsilons[0] < epsilons[-1]
    fresh = one_round(tiny_data, [])
    assert fresh.epsilon == pytest.approx(epsilons[0], abs=1e-6)  # a new engine alone would report one round


def test_same_seed_same_update(tiny_data: ImageDataset) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("mnist-cnn")
        train_dp_sgd(
            model, tiny_data, epochs=1, batch_size=16, optimizer="sgd", learning_rate=0.05, noise_multiplier=1.0,
            max_grad_norm=1.0, delta=1e-5, history=[], device=torch.device("cpu"), seed=seed,
        )  # fmt: skip
        assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())
        return [p.detach().clone() for p in model.parameters()]

    first, again, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_batchnorm_models_are_fixed_and_the_fix_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    with caplog.at_level(logging.WARNING):
        fixed = make_private_compatible(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fixed.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in fixed.modules())
    assert "ModuleValidator.fix" in caplog.text
    plain = build_model("mnist-cnn")
    assert make_private_compatible(plain) is plain


def test_unknown_accountant_is_rejected(tiny_data: ImageDataset) -> None:
    with pytest.raises(ValueError, match="accountant must be one of"):
        train_dp_sgd(
            build_model("mnist-cnn"), tiny_data, epochs=1, batch_size=16, optimizer="sgd", learning_rate=0.05,
            noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, history=[], device=torch.device("cpu"), seed=0,
            accountant="gdp",
        )  # fmt: skip


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew", "ghost"])
def test_every_grad_sample_mode_trains_and_accounts_alike(tiny_data: ImageDataset, mode: str) -> None:
    torch.manual_seed(0)
    model = build_model("mnist-cnn")
    before = [p.detach().clone() for p in model.parameters()]
    result = train_dp_sgd(
        model, tiny_data, epochs=1, batch_size=16, optimizer="sgd", learning_rate=0.05, noise_multiplier=1.2,
        max_grad_norm=1.0, delta=1e-5, history=[], device=torch.device("cpu"), seed=0, grad_sample_mode=mode,
    )  # fmt: skip
    assert result.history == [(1.2, 16 / 96, 6)]
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="grad_sample_mode must be one of"):
        train_dp_sgd(
            model, tiny_data, epochs=1, batch_size=16, optimizer="sgd", learning_rate=0.05, noise_multiplier=1.0,
            max_grad_norm=1.0, delta=1e-5, history=[], device=torch.device("cpu"), seed=0, grad_sample_mode="x",
        )  # fmt: skip
