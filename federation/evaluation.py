"""Federated evaluation of a binary classifier from securely summable histograms.

A node never sends its predictions: it sends fixed-bin histograms of predicted
probabilities for positives and negatives, the per-bin sum of predictions, its summed
log-loss and its correct count. Summed over nodes (by SecAgg+), these give the exact
federated accuracy, log-loss, Brier-free calibration error (ECE) and an AUC that is exact
up to ties within one of :data:`N_BINS` bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EVAL_LENGTH", "N_BINS", "EvaluationMetrics", "local_evaluation", "metrics_from_sums"]

#: Probability bins of the evaluation histograms.
N_BINS = 200
#: Length of the evaluation vector: positives, negatives, per-bin sum of p, log-loss, correct, n.
EVAL_LENGTH = 3 * N_BINS + 3
_EPS = 1e-7


def local_evaluation(prob: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return a node's evaluation vector for predicted probabilities ``prob`` and labels ``y``.

    Raises:
        ValueError: shapes differ or labels are not 0/1.
    """
    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if prob.shape != y.shape:
        raise ValueError("prob and y must have the same shape")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    bins = np.minimum((prob * N_BINS).astype(np.int64), N_BINS - 1)
    pos = np.bincount(bins[y == 1], minlength=N_BINS)
    neg = np.bincount(bins[y == 0], minlength=N_BINS)
    psum = np.bincount(bins, weights=prob, minlength=N_BINS)
    p = np.clip(prob, _EPS, 1 - _EPS)
    logloss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum())
    correct = float(((prob >= 0.5) == (y == 1)).sum())
    return np.concatenate([pos, neg, psum, [logloss, correct, float(len(y))]]).astype(np.float64)


@dataclass(frozen=True)
class EvaluationMetrics:
    """Federated metrics of one model version."""

    n: int
    auc: float
    accuracy: float
    log_loss: float
    ece: float
    prevalence: float

    def as_dict(self) -> dict[str, float]:
        """Return the metrics as a JSON-ready mapping."""
        return {
            "n": self.n,
            "auc": self.auc,
            "accuracy": self.accuracy,
            "log_loss": self.log_loss,
            "ece": self.ece,
            "prevalence": self.prevalence,
        }


def metrics_from_sums(summed: np.ndarray) -> EvaluationMetrics:
    """Compute metrics from the sum over nodes of :func:`local_evaluation` vectors.

    Small negative counts from quantisation are clipped to zero.

    Returns:
        The federated :class:`EvaluationMetrics`.

    Raises:
        ValueError: the vector has the wrong length or holds no example.
    """
    summed = np.asarray(summed, dtype=np.float64)
    if summed.shape != (EVAL_LENGTH,):
        raise ValueError(f"expected {EVAL_LENGTH} entries, got {summed.shape}")
    pos = np.clip(summed[:N_BINS], 0, None)
    neg = np.clip(summed[N_BINS : 2 * N_BINS], 0, None)
    psum = summed[2 * N_BINS : 3 * N_BINS]
    logloss, correct, n = summed[3 * N_BINS :]
    n_pos, n_neg = pos.sum(), neg.sum()
    total = n_pos + n_neg
    if total <= 0.5:
        raise ValueError("the evaluation holds no example")
    # AUC: P(score_pos > score_neg) + 0.5 P(tie), ties = same bin.
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    auc = (
        float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
        if n_pos and n_neg
        else float("nan")
    )
    count = pos + neg
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(
            count > 0,
            np.abs(psum / np.where(count > 0, count, 1) - pos / np.where(count > 0, count, 1)),
            0.0,
        )
    ece = float((count * gap).sum() / total)
    return EvaluationMetrics(
        n=int(round(n)),
        auc=auc,
        accuracy=float(correct / total),
        log_loss=float(logloss / total),
        ece=ece,
        prevalence=float(n_pos / total),
    )
