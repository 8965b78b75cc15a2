"""DPFedAvg with Flower's adaptive clipping: the norm adapts and each round is accounted with its real noise."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

from flwr_privshare.dp.accounting import adaptive_round_noise_multiplier
from flwr_privshare.protocol import ADAPTIVE_CLIPPING_KEY
from flwr_privshare.strategies import DPFedAvg

from .test_dp_fedavg import DIM, FakeGrid, dp, run_round


def test_round_multiplier_closed_form() -> None:
    # Same norm, all replies: the two Gaussians combine as (z^-2 + sigma^-2)^-1/2.
    assert adaptive_round_noise_multiplier(2.0, 1.0, 1.0, 4, 4, 3.0) == pytest.approx((2.0**-2 + 3.0**-2) ** -0.5)
    # The norm halved before the noise: the update's noise is half as large for its sensitivity.
    assert adaptive_round_noise_multiplier(2.0, 1.0, 0.5, 4, 4, 3.0) == pytest.approx((1.0**-2 + 3.0**-2) ** -0.5)
    # Two of four replies: the k/m factor of fixed clipping.
    assert adaptive_round_noise_multiplier(2.0, 1.0, 1.0, 2, 4, 3.0) == pytest.approx((1.0**-2 + 3.0**-2) ** -0.5)


def test_server_adaptive_norm_moves_and_epsilon_composes_both_releases() -> None:
    strategy = dp(
        FedAvg(fraction_train=1.0, min_available_nodes=1),
        clipping="server-adaptive",
        num_sampled_clients=40,
        num_total_clients=40,
        clipped_count_stddev=4.0,
        clipping_norm=0.1,
    )
    adaptive = strategy.adaptive
    z_update = adaptive.noise_multiplier  # type: ignore[attr-defined]
    assert z_update > 1.1  # Flower raises the update noise to make room for the count's
    rng = np.random.default_rng(0)
    global_w = np.zeros(DIM, dtype=np.float32)
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = np.zeros(len(orders))
    norms = [strategy.current_clipping_norm]
    for server_round in (1, 2, 3):
        updates = [rng.standard_normal(DIM).astype(np.float32) for _ in range(40)]  # norm ~ 224 >> C: all clipped
        run_round(strategy, server_round, updates, global_w)
        norms.append(strategy.current_clipping_norm)
        # Independent composition: the update release and the count release as two Gaussian mechanisms (q = 1).
        update_multiplier = z_update * norms[-1] / norms[-2]
        rdp += compute_rdp(q=1.0, noise_multiplier=update_multiplier, steps=1, orders=orders)
        rdp += compute_rdp(q=1.0, noise_multiplier=4.0, steps=1, orders=orders)
        expected, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
        assert strategy.accountant.epsilon() == pytest.approx(expected, rel=1e-6)
    assert norms[-1] > norms[0]  # every update was clipped, so the norm grows towards the median
    report = strategy.privacy_report()
    assert report["final_clipping_norm"] == norms[-1] and len(report["round_noise_multipliers"]) == 3


def test_client_adaptive_asks_the_clients_for_adaptive_clipping() -> None:
    strategy = dp(clipping="client-adaptive", clipped_count_stddev=1.0, noise_multiplier=0.5)
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), cast(Grid, FakeGrid(40))))
    config = messages[0].content.config_records["config"]
    assert config[ADAPTIVE_CLIPPING_KEY] is True and config["clipping_norm"] == 0.5


def test_target_epsilon_is_refused_with_adaptive_clipping() -> None:
    with pytest.raises(
        ValueError,
        match=r"it must be 0 with dp-clipping .* \(with adaptive clipping epsilon is only known after the run\)",
    ):
        DPFedAvg.with_target_epsilon(
            FedAvg(),
            target_epsilon=8.0,
            num_rounds=5,
            clipping_norm=0.5,
            num_sampled_clients=4,
            num_total_clients=40,
            delta=1e-5,
            clipping="server-adaptive",
        )


@pytest.mark.parametrize(("scale", "grows"), [(100.0, True), (1e-4, False)])
def test_the_norm_moves_towards_the_target_quantile(scale: float, grows: bool) -> None:
    """All updates clipped: the norm must grow; none clipped: it must shrink (Andrew et al., Eq. 1)."""
    strategy = dp(
        FedAvg(fraction_train=1.0, min_available_nodes=1),
        clipping="server-adaptive",
        num_sampled_clients=40,
        num_total_clients=40,
        clipped_count_stddev=1.0,
        noise_multiplier=0.5,
    )
    rng = np.random.default_rng(1)
    before = strategy.current_clipping_norm
    run_round(
        strategy, 1, [scale * rng.standard_normal(DIM).astype(np.float32) for _ in range(40)], np.zeros(DIM, np.float32)
    )
    assert (strategy.current_clipping_norm > before) == grows
