"""The membership scores and metrics against independent computations (scipy, brute force, closed forms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm
from sklearn.metrics import roc_auc_score

from flwr_privshare.attacks.membership.metrics import empirical_epsilon, roc_metrics
from flwr_privshare.attacks.membership.reference import reference_memberships
from flwr_privshare.attacks.membership.scores import (
    RMIA_DEFAULT_A,
    lira_scores,
    rmia_scores,
    shadow_scores,
    tune_rmia_a,
)
from flwr_privshare.attacks.membership.signals import logit_confidence, query_views, shifted


def gaussian_game(
    num_examples: int = 2000, num_models: int = 64, gap: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic LiRA signals: each example has its own OUT mean; IN adds ``gap``; unit noise.

    Returns (target signals (N, 1), reference signals (K, N, 1), reference memberships (K, N), truth (N,)).
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 2.0, size=num_examples)
    memberships = reference_memberships(num_examples, num_models, seed)
    references = means + gap * memberships + rng.normal(size=(num_models, num_examples))
    truth = rng.permutation(num_examples) < num_examples // 2
    target = means + gap * truth + rng.normal(size=num_examples)
    return target[:, None], references[..., None], memberships, truth


def test_online_lira_matches_a_scipy_implementation() -> None:
    target, references, memberships, _ = gaussian_game(num_examples=300, num_models=16)
    ours = lira_scores(target, references, memberships, online=True, fixed_variance=False)
    expected = []
    for n in range(target.shape[0]):
        signals_in = references[memberships[:, n], n, 0]
        signals_out = references[~memberships[:, n], n, 0]
        expected.append(
            norm.logpdf(target[n, 0], signals_in.mean(), signals_in.std())
            - norm.logpdf(target[n, 0], signals_out.mean(), signals_out.std())
        )
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_offline_lira_is_the_one_sided_test_against_out() -> None:
    target, references, memberships, _ = gaussian_game(num_examples=300, num_models=16)
    ours = lira_scores(target, references, memberships, online=False, fixed_variance=False)
    expected = []
    for n in range(target.shape[0]):
        signals_out = references[~memberships[:, n], n, 0]
        expected.append(-norm.logsf(target[n, 0], signals_out.mean(), signals_out.std()))
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("online", [True, False])
def test_lira_reaches_the_optimal_auc_of_the_gaussian_game(online: bool) -> None:
    """Equal unit variances and a gap of 1: the likelihood-ratio test's AUC is Phi(1 / sqrt(2)) = 0.760.

    A global threshold on the raw signal ignores the per-example means (variance 4) and can
    only reach Phi(1 / sqrt(2 + 8)) = 0.624: the per-example calibration is what LiRA adds.
    """
    target, references, memberships, truth = gaussian_game()
    optimal = norm.cdf(1 / np.sqrt(2))
    for fixed in (False, True):
        auc = roc_auc_score(truth, lira_scores(target, references, memberships, online=online, fixed_variance=fixed))
        assert auc == pytest.approx(optimal, abs=0.03)
    assert roc_auc_score(truth, target[:, 0]) == pytest.approx(norm.cdf(1 / np.sqrt(10)), abs=0.03)


def test_lira_averages_the_views() -> None:
    target, references, memberships, _ = gaussian_game(num_examples=200, num_models=8)
    two_views = lira_scores(
        np.concatenate([target, target + 1], axis=1),
        np.concatenate([references, references + 1], axis=2),
        memberships,
        online=True,
        fixed_variance=False,
    )
    one_view = lira_scores(target, references, memberships, online=True, fixed_variance=False)
    np.testing.assert_allclose(two_views, one_view, rtol=1e-9)  # a shifted copy scores the same


def test_lira_refuses_a_candidate_without_out_models() -> None:
    memberships = np.ones((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="did not train on it"):
        lira_scores(np.zeros((3, 1)), np.zeros((2, 3, 1)), memberships, online=False, fixed_variance=True)


def test_rmia_matches_the_brute_force_pairwise_count() -> None:
    rng = np.random.default_rng(1)
    num_models, num_candidates, num_population = 6, 80, 50
    probability = rng.uniform(0.05, 1.0, size=(num_models, num_candidates))
    memberships = reference_memberships(num_candidates, num_models, 3)
    population = rng.uniform(0.05, 1.0, size=(num_models, num_population))
    target, target_population = rng.uniform(0.05, 1.0, num_candidates), rng.uniform(0.05, 1.0, num_population)
    a, gamma = 0.4, 1.5
    ours = rmia_scores(target, probability, memberships, target_population, population, a=a, gamma=gamma)
    # Eq. 4 of the paper, written out: Pr(x) from OUT models, then the pairwise comparison with every z
    out_mean = np.array([probability[~memberships[:, n], n].mean() for n in range(num_candidates)])
    ratio_x = target / (((1 + a) * out_mean + 1 - a) / 2)
    ratio_z = target_population / (((1 + a) * population.mean(axis=0) + 1 - a) / 2)
    expected = np.array([[rx / rz > gamma for rz in ratio_z] for rx in ratio_x]).mean(axis=1)
    np.testing.assert_allclose(ours, expected)


def test_rmia_separates_members_in_a_synthetic_game_and_tunes_a() -> None:
    rng = np.random.default_rng(2)
    num_models, num_candidates, num_population = 8, 1000, 500
    hardness = rng.uniform(0.1, 0.9, size=num_candidates)  # how well the example generalises
    memberships = reference_memberships(num_candidates, num_models, 4)
    noise = rng.normal(0, 0.03, size=(num_models, num_candidates))
    probability = np.clip(hardness + 0.3 * memberships * (1 - hardness) + noise, 1e-3, 1)
    population = np.clip(rng.uniform(0.1, 0.9, size=(num_models, num_population)), 1e-3, 1)
    truth = rng.permutation(num_candidates) < num_candidates // 2
    target = np.clip(hardness + 0.3 * truth * (1 - hardness) + rng.normal(0, 0.03, num_candidates), 1e-3, 1)
    a = tune_rmia_a(probability, memberships, population)
    scores = rmia_scores(target, probability, memberships, population.mean(axis=0), population, a=a)
    rmia_auc, raw_auc = roc_auc_score(truth, scores), roc_auc_score(truth, target)
    assert rmia_auc > 0.85 and rmia_auc > raw_auc + 0.1, (rmia_auc, raw_auc)
    assert tune_rmia_a(probability[:1], memberships[:1], population[:1]) == RMIA_DEFAULT_A


def test_shadow_attack_learns_in_and_out_from_shadow_features() -> None:
    rng = np.random.default_rng(3)
    memberships = reference_memberships(400, 4, 5)
    features = rng.normal(size=(4, 400, 3)) + memberships[..., None] * 1.5
    truth = rng.permutation(400) < 200
    target = rng.normal(size=(400, 3)) + truth[:, None] * 1.5
    scores = shadow_scores(features, memberships, target, seed=7)
    assert roc_auc_score(truth, scores) > 0.85
    np.testing.assert_array_equal(scores, shadow_scores(features, memberships, target, seed=7))


def test_reference_memberships_are_balanced() -> None:
    memberships = reference_memberships(1000, 8, 0)
    assert (memberships.sum(axis=0) == 4).all()
    assert abs(int(memberships[0].sum()) - 500) < 60
    single = reference_memberships(1001, 1, 0)
    assert single.shape == (1, 1001) and int(single.sum()) == 500


def test_roc_metrics_against_a_brute_force_threshold_sweep() -> None:
    rng = np.random.default_rng(4)
    truth = rng.permutation(2000) < 1000
    scores = rng.normal(size=2000) + truth * 1.0
    metrics = roc_metrics(truth, scores)
    thresholds = np.sort(np.concatenate([scores, [np.inf]]))
    tpr = np.array([(scores[truth] >= t).mean() for t in thresholds])
    fpr = np.array([(scores[~truth] >= t).mean() for t in thresholds])
    assert metrics["balanced_accuracy"] == pytest.approx(((tpr + 1 - fpr) / 2).max())
    assert metrics["tpr_at_0.01_fpr"] == pytest.approx(tpr[fpr <= 0.01].max())
    assert metrics["tpr_at_0.001_fpr"] == pytest.approx(tpr[fpr <= 0.001].max())
    assert metrics["auc"] == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=0.03)


def test_empirical_epsilon_closed_form_for_a_perfect_attack() -> None:
    """No false positives among n: the 95% upper FPR bound is 1 - 0.025^(1/n); all members found: TPR >= 0.025^(1/n)."""
    n, delta = 1000, 1e-5
    truth = np.arange(2 * n) < n
    bound = empirical_epsilon(truth, truth.astype(float), delta)
    fpr_high = beta.ppf(0.975, 1, n)
    tpr_low = beta.ppf(0.025, n, 1)
    assert fpr_high == pytest.approx(1 - 0.025 ** (1 / n))
    assert bound == pytest.approx(np.log((tpr_low - delta) / fpr_high), rel=1e-9)


def test_empirical_epsilon_of_a_blind_attack_is_near_zero() -> None:
    rng = np.random.default_rng(5)
    truth = rng.permutation(2000) < 1000
    assert empirical_epsilon(truth, rng.normal(size=2000), 1e-5) < 0.3


def test_logit_confidence_is_log_odds_of_the_label() -> None:
    logits = torch.randn(50, 10, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (50,))
    p = logits.softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(logit_confidence(logits, labels), torch.log(p / (1 - p)))
    confident = torch.tensor([[60.0, 0.0, 0.0]], dtype=torch.float64)  # p rounds to 1 in float64
    assert logit_confidence(confident, torch.tensor([0])).item() == pytest.approx(60 - np.log(2))


def test_query_views_shift_with_zero_fill_and_flip() -> None:
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    moved = shifted(images, 2, -1)
    expected = torch.zeros_like(images)
    expected[..., 2:, :5] = images[..., :4, 1:]
    torch.testing.assert_close(moved, expected)
    views = query_views(images, flip=True)
    assert len(views) == 10
    torch.testing.assert_close(views[0], images)
    torch.testing.assert_close(views[5], images.flip(-1))
    assert len(query_views(images, flip=False)) == 5
