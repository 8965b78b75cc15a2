"""Membership scores from signals: higher means "more likely a member". Pure numpy, one call per attack.

- LOSS (Yeom et al. 2018): the negative loss of the target model.
- LiRA (Carlini et al. 2022, Algorithm 1): a Gaussian per example (and per query view) fitted
  to the logit-scaled confidences of the reference models that trained on it (IN) and that did
  not (OUT). Online: the log likelihood ratio ``log N(c; mu_in, s_in) - log N(c; mu_out, s_out)``;
  offline: the one-sided test against OUT alone, ``-log Pr[Z > c]`` with ``Z ~ N(mu_out, s_out)``.
  The per-view scores are averaged. With a fixed (global) variance, every example shares one
  standard deviation per side: the root of the mean per-example variance, which is how the paper
  keeps LiRA usable with few reference models.
- RMIA offline (Zarifzadeh et al. 2024, Eq. 4 and Section 3.2): the likelihood ratio
  ``Pr(x | target) / Pr(x)`` of each candidate, compared with that of population samples z
  nobody trained on; the score is the fraction of z that x dominates by more than ``gamma``.
  ``Pr(x)`` is approximated from OUT reference models as ``((1 + a) Pr_out(x) + (1 - a)) / 2``.
- Shadow models (Shokri et al. 2017): a scikit-learn classifier learns IN vs OUT from the
  reference (shadow) models' output features and is applied to the target's.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

# SciPy and scikit-learn are imported where used: every client process imports this module (attacks
# register on import) and never scores.

#: The candidate values of RMIA's ``a`` (the paper's sweep).
RMIA_A_GRID = tuple(round(0.1 * step, 1) for step in range(11))
#: RMIA's ``a`` when a single reference model leaves none to tune it on (ML Privacy Meter's default).
RMIA_DEFAULT_A = 0.3
#: Smallest standard deviation of a LiRA Gaussian (two equal signals would otherwise divide by zero).
MIN_STD = 1e-6


def loss_scores(target_loss: np.ndarray) -> np.ndarray:
    """LOSS: members have low loss."""
    return -np.asarray(target_loss, dtype=np.float64)


def _log_normal(value: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((value - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def _masked_moments(signals: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance and count over models (axis 0) of ``signals`` (K, N, A) where ``mask`` (K, N) holds."""
    weight = mask[..., None].astype(np.float64)
    count = weight.sum(axis=0)
    mean = (signals * weight).sum(axis=0) / np.maximum(count, 1)
    variance = (((signals - mean) ** 2) * weight).sum(axis=0) / np.maximum(count, 1)
    return mean, variance, count


def _std(variance: np.ndarray, count: np.ndarray, fixed_variance: bool) -> np.ndarray:
    if fixed_variance:
        usable = np.broadcast_to(count > 1, variance.shape)
        pooled = variance[usable].mean() if usable.any() else 0.0
        return np.full_like(variance, max(float(np.sqrt(pooled)), MIN_STD))
    return np.maximum(np.sqrt(variance), MIN_STD)


def lira_scores(
    target_confidence: np.ndarray,
    reference_confidence: np.ndarray,
    reference_in: np.ndarray,
    *,
    online: bool,
    fixed_variance: bool,
) -> np.ndarray:
    """LiRA scores of N candidates.

    Args:
        target_confidence: ``(N, A)`` logit-scaled confidences of the target model.
        reference_confidence: ``(K, N, A)`` the same for K reference models.
        reference_in: ``(K, N)`` whether reference model k trained on candidate n.
        online: compare IN with OUT (needs both for every candidate); else the offline test.
        fixed_variance: one standard deviation per side for all candidates.
    """
    from scipy.special import log_ndtr

    reference_in = np.asarray(reference_in, dtype=bool)
    mean_out, var_out, count_out = _masked_moments(reference_confidence, ~reference_in)
    if (count_out == 0).any():
        raise ValueError("LiRA needs, for every candidate, a reference model that did not train on it")
    std_out = _std(var_out, count_out, fixed_variance)
    if not online:
        per_view = -log_ndtr((mean_out - target_confidence) / std_out)
        return np.asarray(per_view.mean(axis=1))
    mean_in, var_in, count_in = _masked_moments(reference_confidence, reference_in)
    if (count_in == 0).any():
        raise ValueError("online LiRA needs, for every candidate, a reference model that trained on it")
    std_in = _std(var_in, count_in, fixed_variance)
    per_view = _log_normal(target_confidence, mean_in, std_in) - _log_normal(target_confidence, mean_out, std_out)
    return np.asarray(per_view.mean(axis=1))


def _offline_marginal(reference_probability: np.ndarray, reference_in: np.ndarray, a: float) -> np.ndarray:
    """RMIA's ``Pr(x)`` of each example from OUT models: ``((1 + a) mean_out + (1 - a)) / 2``.

    An example that every reference model trained on (possible with one model) has no OUT
    value; its IN mean stands for ``Pr(x)`` there, from ``Pr(x) = (Pr_out + Pr_in) / 2``.
    """
    out = ~reference_in
    count_out = out.sum(axis=0)
    mean_out = (reference_probability * out).sum(axis=0) / np.maximum(count_out, 1)
    marginal = ((1 + a) * mean_out + (1 - a)) / 2
    count_in = reference_in.sum(axis=0)
    mean_in = (reference_probability * reference_in).sum(axis=0) / np.maximum(count_in, 1)
    return np.where(count_out > 0, marginal, mean_in)


def rmia_scores(
    target_probability: np.ndarray,
    reference_probability: np.ndarray,
    reference_in: np.ndarray,
    population_target: np.ndarray,
    population_reference: np.ndarray,
    *,
    a: float,
    gamma: float = 1.0,
) -> np.ndarray:
    """Offline RMIA scores of N candidates against Z population samples.

    Args:
        target_probability: ``(N,)`` ``Pr(y | x)`` under the target (mean over query views).
        reference_probability: ``(K, N)`` the same under the reference models.
        reference_in: ``(K, N)`` whether reference model k trained on candidate n.
        population_target: ``(Z,)`` ``Pr(y | z)`` of the population under the target.
        population_reference: ``(K, Z)`` the same under the reference models (none trained on z).
        a: the offline approximation's coefficient.
        gamma: how much x must dominate z to count.
    """
    reference_in = np.asarray(reference_in, dtype=bool)
    ratio_x = target_probability / _offline_marginal(reference_probability, reference_in, a)
    population_in = np.zeros_like(population_reference, dtype=bool)
    ratio_z = np.sort(population_target / _offline_marginal(population_reference, population_in, a))
    # the number of z with ratio_x / ratio_z > gamma, i.e. ratio_z < ratio_x / gamma
    dominated = np.searchsorted(ratio_z, ratio_x / gamma, side="left")
    return dominated / len(ratio_z)


def tune_rmia_a(
    probability: np.ndarray,
    reference_in: np.ndarray,
    population: np.ndarray,
) -> float:
    """RMIA's ``a``, chosen as the paper does: attack reference model 0 with the others, keep the best AUC.

    Args:
        probability: ``(K, N)`` ``Pr(y | x)`` of the candidates under every reference model.
        reference_in: ``(K, N)`` memberships of the candidates.
        population: ``(K, Z)`` ``Pr(y | z)`` of the population under every reference model.

    Returns:
        The best ``a`` of :data:`RMIA_A_GRID`, or :data:`RMIA_DEFAULT_A` with one reference model.
    """
    from sklearn.metrics import roc_auc_score

    if probability.shape[0] < 2:
        return RMIA_DEFAULT_A
    truth = np.asarray(reference_in[0], dtype=bool)
    if truth.all() or not truth.any():
        return RMIA_DEFAULT_A
    aucs = [
        roc_auc_score(
            truth,
            rmia_scores(probability[0], probability[1:], reference_in[1:], population[0], population[1:], a=a),
        )
        for a in RMIA_A_GRID
    ]
    return float(RMIA_A_GRID[int(np.argmax(aucs))])


def shadow_scores(
    reference_features: np.ndarray, reference_in: np.ndarray, target_features: np.ndarray, *, seed: int
) -> np.ndarray:
    """Shokri et al.'s attack: a gradient-boosted classifier of IN vs OUT on the shadow models' features.

    Args:
        reference_features: ``(K, N, F)`` features of the pool under each shadow (reference) model.
        reference_in: ``(K, N)`` which pool rows each shadow model trained on (the classifier's labels).
        target_features: ``(M, F)`` features of the candidates under the target model.
        seed: the classifier's seed.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = reference_features.reshape(-1, reference_features.shape[-1])
    labels = np.asarray(reference_in, dtype=bool).reshape(-1)
    classifier = HistGradientBoostingClassifier(max_iter=200, random_state=seed % 2**32)
    # One OpenMP thread: beside PyTorch's threads, more spin-wait for minutes on a busy CPU.
    with threadpool_limits(1):
        classifier.fit(features, labels)
        return np.asarray(classifier.predict_proba(target_features)[:, 1])
