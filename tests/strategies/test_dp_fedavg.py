"""DPFedAvg: Opacus-checked accounting, noise calibration, clipping, sampling, inner strategies, bad input."""

from __future__ import annotations

import random
from typing import cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
)
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

from flwr_privshare.strategies import DPFedAvg

DIM = 50_000


class FakeGrid:
    """The part of a Grid that strategies use for sampling."""

    def __init__(self, num_nodes: int) -> None:
        self.node_ids = list(range(1, num_nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.node_ids


def reply(weights: np.ndarray, examples: int) -> Message:
    instruction = Message(content=RecordDict(), dst_node_id=3, message_type=MessageType.TRAIN)
    content = RecordDict(
        {"arrays": ArrayRecord({"w": Array(weights)}), "metrics": MetricRecord({"num-examples": examples})}
    )
    return Message(content=content, reply_to=instruction)


def failure() -> Message:
    instruction = Message(content=RecordDict(), dst_node_id=4, message_type=MessageType.TRAIN)
    return Message(error=Error(code=2, reason="ClientApp raised"), reply_to=instruction)


def dp(inner: FedAvg | None = None, **overrides: object) -> DPFedAvg:
    settings: dict[str, object] = {
        "noise_multiplier": 1.1,
        "clipping_norm": 0.5,
        "num_sampled_clients": 4,
        "num_total_clients": 40,
        "delta": 1e-5,
        "sampling": "fixed",
        **overrides,
    }
    return DPFedAvg(inner or FedAvg(fraction_train=0.1, min_available_nodes=1), **settings)  # type: ignore[arg-type]


def run_round(strategy: DPFedAvg, server_round: int, updates: list[np.ndarray], global_w: np.ndarray) -> np.ndarray:
    global_arrays = ArrayRecord({"w": Array(global_w)})
    messages = list(strategy.configure_train(server_round, global_arrays, ConfigRecord(), cast(Grid, FakeGrid(40))))
    assert len(messages) == strategy.num_sampled_clients
    replies = [reply((global_w + u).astype(np.float32), 10 * (i + 1)) for i, u in enumerate(updates)]
    arrays, metrics = strategy.aggregate_train(server_round, replies)
    assert arrays is not None and metrics is not None
    return arrays["w"].numpy() - global_w


def test_epsilon_matches_an_independent_opacus_computation() -> None:
    strategy = dp()
    rng = np.random.default_rng(0)
    global_w = np.zeros(DIM, dtype=np.float32)
    epsilons = []
    for server_round in range(1, 6):
        run_round(strategy, server_round, [rng.standard_normal(DIM).astype(np.float32) for _ in range(4)], global_w)
        orders = RDPAccountant.DEFAULT_ALPHAS
        rdp = compute_rdp(q=4 / 40, noise_multiplier=1.1, steps=server_round, orders=orders)
        expected, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
        assert strategy.accountant.epsilon() == pytest.approx(expected, abs=1e-6)
        epsilons.append(strategy.privacy_report()["epsilon"])
    assert epsilons == sorted(epsilons) and len(set(epsilons)) == 5
    report = strategy.privacy_report()
    no_amp = get_privacy_spent(
        orders=RDPAccountant.DEFAULT_ALPHAS,
        rdp=compute_rdp(q=1.0, noise_multiplier=1.1, steps=5, orders=RDPAccountant.DEFAULT_ALPHAS),
        delta=1e-5,
    )[0]
    assert report["epsilon_no_amplification"] == pytest.approx(no_amp, abs=1e-6) and no_amp > report["epsilon"]
    assert report["rounds_accounted"] == 5 and "without replacement" in report["sampling_assumption"]


def test_noise_std_is_z_times_c_over_m_with_a_zero_update() -> None:
    np.random.seed(0)  # Flower draws the noise from numpy's global generator
    strategy = dp(clipping="client")  # nothing to clip on the server: the aggregate is pure noise
    noise = run_round(strategy, 1, [np.zeros(DIM, np.float32)] * 4, np.full(DIM, 0.25, np.float32))
    assert float(noise.std()) == pytest.approx(1.1 * 0.5 / 4, rel=0.02)
    assert abs(float(noise.mean())) < 5 * 1.1 * 0.5 / 4 / DIM**0.5


def test_server_side_clipping_bounds_every_update_and_averages_uniformly() -> None:
    strategy = dp(noise_multiplier=1e-9)
    rng = np.random.default_rng(1)
    updates = [10.0 * u / np.linalg.norm(u) for u in rng.standard_normal((4, DIM)).astype(np.float32)]
    updates[0] = 0.1 * updates[0] / 10.0  # one update inside the ball stays as it is
    aggregate = run_round(strategy, 1, updates, np.zeros(DIM, np.float32))
    clipped = [u * min(1.0, 0.5 / float(np.linalg.norm(u))) for u in updates]
    np.testing.assert_allclose(aggregate, np.mean(clipped, axis=0), atol=1e-6)  # not weighted by num-examples
    assert np.linalg.norm(aggregate) <= 0.5 + 1e-5 < np.linalg.norm(np.mean(updates, axis=0))


def test_wraps_fedavg_and_fedprox_unchanged() -> None:
    rng = np.random.default_rng(2)
    updates = [rng.standard_normal(DIM).astype(np.float32) * 0.001 for _ in range(4)]
    results = {}
    for inner in (FedAvg(fraction_train=0.1, min_available_nodes=1), FedProx(fraction_train=0.1, proximal_mu=0.1)):
        strategy = dp(inner, noise_multiplier=1e-9)
        messages = list(
            strategy.configure_train(
                1, ArrayRecord({"w": Array(np.zeros(DIM, np.float32))}), ConfigRecord(), FakeGrid(40)
            )  # type: ignore[arg-type]
        )
        if isinstance(inner, FedProx):
            assert messages[0].content.config_records["config"]["proximal-mu"] == 0.1
        results[type(inner).__name__] = run_round(strategy, 1, updates, np.zeros(DIM, np.float32))
    np.testing.assert_allclose(results["FedAvg"], np.mean(updates, axis=0), atol=1e-6)
    np.testing.assert_allclose(results["FedProx"], results["FedAvg"], atol=1e-6)


def test_failed_replies_are_dropped_and_the_round_is_accounted_with_less_noise() -> None:
    strategy = dp()
    global_arrays = ArrayRecord({"w": Array(np.zeros(8, np.float32))})
    strategy.configure_train(1, global_arrays, ConfigRecord(), FakeGrid(40))  # type: ignore[arg-type]
    replies = [reply(np.ones(8, np.float32) * i, 5) for i in (1, 2, 3)] + [failure()]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    assert strategy.accountant.history == [(1.1 * 3 / 4, 0.1, 1)]
    assert metrics["epsilon"] == pytest.approx(strategy.accountant.epsilon())


def test_target_epsilon_picks_the_noise_and_unreachable_targets_fail() -> None:
    strategy = DPFedAvg.with_target_epsilon(
        FedAvg(),
        target_epsilon=3.0,
        num_rounds=20,
        clipping_norm=1.0,
        num_sampled_clients=5,
        num_total_clients=50,
        delta=1e-5,
    )
    accountant = RDPAccountant()
    accountant.history = [(strategy.noise_multiplier, 0.1, 20)]
    assert accountant.get_epsilon(1e-5) <= 3.0 + 0.01
    with pytest.raises(ValueError, match=r"target-epsilon 0\.0001 cannot be reached"):
        DPFedAvg.with_target_epsilon(
            FedAvg(),
            target_epsilon=1e-4,
            num_rounds=1000,
            clipping_norm=1.0,
            num_sampled_clients=5,
            num_total_clients=5,
            delta=1e-5,
        )


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"noise_multiplier": 0.0}, "'noise-multiplier' is 0.0; it must be a positive finite number"),
        ({"noise_multiplier": -1.0}, "'noise-multiplier' is -1.0; it must be a positive finite number"),
        ({"noise_multiplier": float("inf")}, "'noise-multiplier' is inf; it must be a finite number"),
        ({"clipping_norm": 0.0}, "'clipping-norm' is 0.0; it must be a positive finite number"),
        ({"delta": 1.0}, r"'delta' is 1.0; it must be a number in \(0, 1\)"),
        ({"num_sampled_clients": 41}, r"between 1 and the number of clients \(40\), got 41"),
        ({"clipping": "both"}, "clipping must be one of"),
        ({"sampling": "uniform"}, "sampling must be one of"),
        (
            {"clipping": "server-adaptive", "sampling": "poisson"},
            "'dp-sampling' is 'poisson'; it must be 'fixed' with dp-clipping 'server-adaptive'",
        ),
    ],
)
def test_bad_input_is_rejected_before_training(overrides: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        dp(**overrides)


@pytest.mark.parametrize("inner", [FedMedian(), FedTrimmedAvg(), Krum(), MultiKrum(), Bulyan(), object()])
def test_inner_strategies_that_do_not_average_are_refused(inner: object) -> None:
    # z * C / m is calibrated for the mean of m clipped updates; a median or Krum moves by about C.
    with pytest.raises(TypeError, match="needs an inner strategy that averages the client updates"):
        DPFedAvg(
            inner,  # type: ignore[arg-type]
            noise_multiplier=1.0,
            clipping_norm=1.0,
            num_sampled_clients=1,
            num_total_clients=2,
            delta=1e-5,
        )


@pytest.mark.parametrize("inner", [FedAvg(), FedProx(), FedAvgM(), FedAdam(), FedYogi(), FedAdagrad()])
def test_averaging_inner_strategies_and_subclasses_that_keep_the_mean_are_accepted(inner: FedAvg) -> None:
    class Logged(type(inner)):  # type: ignore[misc]
        """A user's subclass that changes something else than the aggregation."""

        def summary(self) -> None:
            pass

    for strategy in (inner, Logged()):
        DPFedAvg(
            strategy, noise_multiplier=1.0, clipping_norm=1.0, num_sampled_clients=1, num_total_clients=2, delta=1e-5
        )


def test_oversampling_is_refused() -> None:
    strategy = dp(FedAvg(fraction_train=0.5))
    with pytest.raises(RuntimeError, match="sampled 20 clients"):
        strategy.configure_train(1, ArrayRecord({"w": Array(np.zeros(2, np.float32))}), ConfigRecord(), FakeGrid(40))  # type: ignore[arg-type]


def test_client_side_clipping_drops_updates_the_clients_did_not_clip() -> None:
    # With clipping="client" the server trusts the clients' mods; it checks the norms it can see.
    np.random.seed(0)
    strategy = dp(clipping="client", noise_multiplier=1e-9)
    global_w = np.full(DIM, 0.25, np.float32)
    global_arrays = ArrayRecord({"w": Array(global_w)})
    list(strategy.configure_train(1, global_arrays, ConfigRecord(), cast(Grid, FakeGrid(40))))
    clipped = np.full(DIM, 0.5 / DIM**0.5, np.float32)  # norm exactly C = 0.5
    unclipped = np.full(DIM, 2.0 / DIM**0.5, np.float32)  # norm 2.0: no mod clipped it
    replies = [reply(global_w + clipped, 10), reply(global_w + unclipped, 10)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    assert strategy.unclipped == {1: 1} and strategy.accountant.history[-1][2] == 1
    np.testing.assert_allclose(arrays["w"].numpy() - global_w, clipped, atol=1e-6)  # the mean of what was kept
    # A round of unclipped updates only is empty: no model change, no privacy cost.
    list(strategy.configure_train(2, global_arrays, ConfigRecord(), cast(Grid, FakeGrid(40))))
    rounds_before = strategy.accountant.rounds
    assert strategy.aggregate_train(2, [reply(global_w + unclipped, 10)]) == (None, None)
    assert strategy.unclipped[2] == 1 and strategy.accountant.rounds == rounds_before


def poisson_round(
    strategy: DPFedAvg, server_round: int, global_w: np.ndarray, updates: list[np.ndarray] | None = None
) -> tuple[list[int], np.ndarray]:
    """One Poisson round on 40 nodes; the first ``len(updates)`` chosen nodes reply (all when ``updates`` is None)."""
    global_arrays = ArrayRecord({"w": Array(global_w)})
    messages = list(strategy.configure_train(server_round, global_arrays, ConfigRecord(), cast(Grid, FakeGrid(40))))
    chosen = [msg.metadata.dst_node_id for msg in messages]
    updates = [np.zeros_like(global_w)] * len(chosen) if updates is None else updates
    replies = [reply((global_w + u).astype(np.float32), 10) for u in updates]
    arrays, metrics = strategy.aggregate_train(server_round, replies)
    assert arrays is not None and metrics is not None
    return chosen, arrays["w"].numpy() - global_w


def test_poisson_sampling_picks_each_node_with_probability_q_reproducibly_from_the_seed() -> None:
    strategy = dp(sampling="poisson", noise_multiplier=1e-9)
    random.seed(7)
    rounds = [poisson_round(strategy, r, np.zeros(4, np.float32))[0] for r in range(1, 401)]
    sizes = [len(chosen) for chosen in rounds]
    counts = np.bincount([node for chosen in rounds for node in chosen], minlength=41)[1:]
    assert abs(np.mean(sizes) - 4.0) < 0.3 and min(sizes) == 0 and max(sizes) >= 8  # Binomial(40, 0.1)
    assert abs(counts.mean() / 400 - 0.1) < 0.01 and counts.min() > 20  # every node, about q of the rounds
    random.seed(7)
    again = dp(sampling="poisson", noise_multiplier=1e-9)
    assert [poisson_round(again, r, np.zeros(4, np.float32))[0] for r in range(1, 11)] == rounds[:10]


def test_poisson_divides_by_m_whoever_replied_and_accounts_every_round_at_z() -> None:
    strategy = dp(sampling="poisson", noise_multiplier=1e-9)
    random.seed(0)
    updates = [np.full(DIM, 0.1 / DIM**0.5, np.float32), np.full(DIM, 5.0 / DIM**0.5, np.float32)]
    _, aggregate = poisson_round(strategy, 1, np.zeros(DIM, np.float32), updates)
    expected = (updates[0] + updates[1] * 0.5 / 5.0) / 4  # clipped sum over the expected count m = 4, not over 2
    np.testing.assert_allclose(aggregate, expected, atol=1e-7)
    np.random.seed(1)
    zero = dp(sampling="poisson")
    _, noise = poisson_round(zero, 1, np.zeros(DIM, np.float32), [])  # nobody replied: noise is still released
    assert float(noise.std()) == pytest.approx(1.1 * 0.5 / 4, rel=0.02)
    for server_round in range(2, 4):
        poisson_round(zero, server_round, np.zeros(DIM, np.float32), updates[:1])
    rdp = compute_rdp(q=0.1, noise_multiplier=1.1, steps=3, orders=RDPAccountant.DEFAULT_ALPHAS)
    expected_epsilon, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=1e-5)
    assert zero.accountant.history == [(1.1, 0.1, 3)]
    assert zero.privacy_report()["epsilon"] == pytest.approx(expected_epsilon, abs=1e-6)
    assert zero.privacy_report()["sampling"] == "poisson" and "exact" in zero.privacy_report()["sampling_assumption"]


def test_a_server_optimizer_steps_on_the_noisy_mean() -> None:
    # Flower's wrappers add the noise after the inner step; here FedAvgM with learning rate 2 doubles the noisy mean.
    rng = np.random.default_rng(3)
    updates = [(rng.standard_normal(DIM) * 0.001).astype(np.float32) for _ in range(4)]
    steps = {}
    inners = {"FedAvg": FedAvg(fraction_train=0.1), "FedAvgM": FedAvgM(fraction_train=0.1, server_learning_rate=2.0)}
    for name, inner in inners.items():
        np.random.seed(5)
        steps[name] = run_round(dp(inner), 1, updates, np.zeros(DIM, np.float32))
    np.testing.assert_allclose(steps["FedAvgM"], 2 * steps["FedAvg"], rtol=1e-4, atol=1e-7)
    assert float(steps["FedAvg"].std()) > 10 * float(np.mean(updates, axis=0).std())  # the noise is in both


def test_adaptive_clipping_refuses_a_server_optimizer() -> None:
    with pytest.raises(TypeError, match="FedAdam takes a server step"):
        dp(FedAdam(), clipping="server-adaptive")
