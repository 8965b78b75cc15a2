"""User-level accounting against Opacus's RDP analysis."""

from __future__ import annotations

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

from flwr_privshare.dp import UserLevelAccountant, epsilon_rdp, noise_multiplier_for_target


def reference(history: list[tuple[float, float, int]], delta: float) -> float:
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(compute_rdp(q=q, noise_multiplier=z, steps=t, orders=orders) for z, q, t in history)
    return float(get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


def test_poisson_rounds_cost_z_whoever_replied() -> None:
    accountant = UserLevelAccountant(0.9, num_sampled=5, num_total=100, delta=1e-6)  # sampling="poisson"
    for replies in (5, 3, 0):
        accountant.step(replies)
    assert accountant.history == [(0.9, 0.05, 3)]
    assert accountant.epsilon() == pytest.approx(reference([(0.9, 0.05, 3)], 1e-6), abs=1e-6)


def test_rounds_compose_like_opacus() -> None:
    accountant = UserLevelAccountant(0.9, num_sampled=5, num_total=100, delta=1e-6, sampling="fixed")
    for _ in range(30):
        accountant.step(5)
    accountant.step(3)
    assert accountant.history == [(0.9, 0.05, 30), (0.9 * 3 / 5, 0.05, 1)] and accountant.rounds == 31
    assert accountant.epsilon() == pytest.approx(reference(accountant.history, 1e-6), abs=1e-6)
    assert accountant.epsilon_no_amplification() == pytest.approx(
        reference([(0.9, 1.0, 30), (0.54, 1.0, 1)], 1e-6), abs=1e-6
    )
    assert epsilon_rdp([], 1e-5) == 0.0


def test_noise_for_a_target_epsilon_meets_it() -> None:
    z = noise_multiplier_for_target(8.0, 1e-5, 0.1, 50)
    assert reference([(z, 0.1, 50)], 1e-5) <= 8.0 + 0.01
    assert reference([(0.9 * z, 0.1, 50)], 1e-5) > 8.0
