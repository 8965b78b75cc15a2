"""ST-Adam (Section IV-E) against hand-computed steps."""

from __future__ import annotations

import math

import pytest
import torch

from flwr_privshare.visualmixer import STAdam


def test_matches_adam_without_bias_correction() -> None:
    lr, beta1, beta2, eps = 0.1, 0.9, 0.999, 1e-8
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = STAdam([param], lr=lr, betas=(beta1, beta2), eps=eps)
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([-0.25, 2.0])]
    expected, m, v = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0]
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        for i in range(2):
            g = float(grad[i])
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            expected[i] -= lr * m[i] / (math.sqrt(v[i]) + eps)
        assert param.detach().tolist() == pytest.approx(expected, rel=1e-6)
    # torch's (bias-corrected) Adam moves the first step by lr; ST-Adam by lr * 0.1 / sqrt(0.001)
    reference = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    adam = torch.optim.Adam([reference], lr=lr, betas=(beta1, beta2), eps=eps)
    reference.grad = grads[0].clone()
    adam.step()
    assert reference.detach().tolist() == pytest.approx([0.9, -1.9], rel=1e-6)


def test_weight_decay_and_momentum_follow_the_paper() -> None:
    lr, wd, mu = 0.05, 0.1, 0.5
    param = torch.nn.Parameter(torch.tensor([2.0]))
    optimizer = STAdam([param], lr=lr, betas=(0.9, 0.99), weight_decay=wd, momentum=mu)
    theta, m, v, b = 2.0, 0.0, 0.0, 0.0
    for raw in (1.0, -3.0, 0.5):
        param.grad = torch.tensor([raw])
        optimizer.step()
        g = raw + wd * theta
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        b = mu * b + m / (math.sqrt(v) + 1e-8)
        theta -= lr * b
        assert float(param.detach()) == pytest.approx(theta, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lr": 0.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"weight_decay": -1.0}, "weight_decay")],
)
def test_bad_hyperparameters_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        STAdam([torch.nn.Parameter(torch.zeros(1))], **kwargs)
