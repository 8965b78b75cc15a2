"""How well scores separate members from non-members: ROC metrics, the DP audit bound and the ROC plot.

The metrics follow Carlini et al. (2022): AUC, the best balanced accuracy over thresholds, and
the true-positive rate at a low false-positive rate (1% and 0.1%), where an attack that is
confident about a few examples shows up while the AUC hides it.

The audit (Jagielski et al. 2020; Nasr et al. 2021): an attack with true-positive rate TPR and
false-positive rate FPR on an (epsilon, delta)-DP mechanism must satisfy
``TPR <= exp(epsilon) FPR + delta`` (and the same for the complements), so every threshold
gives ``epsilon >= log((TPR - delta) / FPR)``. With Clopper-Pearson bounds on both rates the
result is a lower bound that holds with the stated confidence; one above the accountant's
epsilon would mean the accounting (or the implementation) is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# SciPy and scikit-learn are imported where used: every client process imports this module (attacks
# register on import) and never scores.

#: False-positive rates at which the true-positive rate is reported.
LOW_FPRS = (0.01, 0.001)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR of the ROC with FPR at most ``target``."""
    allowed = fpr <= target
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def roc_metrics(is_member: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC, balanced accuracy and TPR at 1% and 0.1% FPR of ``scores`` (higher = member)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(is_member, scores)
    metrics = {
        "auc": float(roc_auc_score(is_member, scores)),
        "balanced_accuracy": float(np.max((tpr + 1 - fpr) / 2)),
    }
    for target in LOW_FPRS:
        metrics[f"tpr_at_{target:g}_fpr"] = tpr_at_fpr(fpr, tpr, target)
    return metrics


def _clopper_pearson(successes: np.ndarray, trials: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``1 - alpha`` Clopper-Pearson interval of a binomial rate, element-wise."""
    from scipy.stats import beta

    lower = np.where(successes > 0, beta.ppf(alpha / 2, successes, trials - successes + 1), 0.0)
    upper = np.where(successes < trials, beta.ppf(1 - alpha / 2, successes + 1, trials - successes), 1.0)
    return lower, upper


def empirical_epsilon(is_member: np.ndarray, scores: np.ndarray, delta: float, confidence: float = 0.95) -> float:
    """The largest epsilon lower bound over all thresholds, with ``confidence`` (0 when none is positive)."""
    from sklearn.metrics import roc_curve

    is_member = np.asarray(is_member, dtype=bool)
    positives, negatives = int(is_member.sum()), int((~is_member).sum())
    fpr, tpr, _ = roc_curve(is_member, scores)
    true_pos, false_pos = np.rint(tpr * positives), np.rint(fpr * negatives)
    alpha = 1 - confidence
    tpr_low, _ = _clopper_pearson(true_pos, positives, alpha)
    _, fpr_high = _clopper_pearson(false_pos, negatives, alpha)
    # the complementary test: true negatives vs false negatives
    tnr_low, _ = _clopper_pearson(negatives - false_pos, negatives, alpha)
    _, fnr_high = _clopper_pearson(positives - true_pos, positives, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = np.concatenate([np.log((tpr_low - delta) / fpr_high), np.log((tnr_low - delta) / fnr_high)])
    finite = bounds[np.isfinite(bounds)]
    return float(max(finite.max(), 0.0)) if finite.size else 0.0


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> Any:
    """A log-log ROC figure with one curve per ``{label: (is_member, scores)}`` and the chance line."""
    import matplotlib
    from sklearn.metrics import roc_auc_score, roc_curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    floor = 1e-4
    for label, (is_member, scores) in curves.items():
        fpr, tpr, _ = roc_curve(is_member, scores)
        auc = roc_auc_score(is_member, scores)
        axes.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=f"{label} (AUC {auc:.3f})")
    axes.plot([floor, 1], [floor, 1], color="grey", linestyle="--", linewidth=0.8, label="chance")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(floor, 1)
    axes.set_ylim(floor, 1)
    axes.set_xlabel("false-positive rate")
    axes.set_ylabel("true-positive rate")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure
