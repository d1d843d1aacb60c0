"""Federated evaluation of a binary classifier from securely summable histograms.

A node never sends its predictions: it sends fixed-bin histograms of predicted
probabilities for positives and negatives, the per-bin sum of predictions, its summed
log-loss and its correct count. Summed over nodes (by SecAgg+), these give the exact
federated accuracy, log-loss, Brier-free calibration error (ECE) and an AUC that is exact
up to ties within one of :data:`N_BINS` bins.

A job with ``[privacy]`` releases less: the two histograms alone, on fewer bins
(:func:`histograms`), each node adding its share of noise before the secure sum
(:mod:`federation.evaluation_dp`). One resident's held-out row is then one count in one
bin, and every metric is read from the noisy histograms (:func:`metrics_from_histograms`:
accuracy exactly, log-loss and ECE at the bins' centres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "EVAL_LENGTH",
    "N_BINS",
    "EvaluationMetrics",
    "histograms",
    "local_evaluation",
    "metrics_from_histograms",
    "metrics_from_sums",
]

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
    prob, y = _checked(prob, y)
    bins = _bin_of(prob, N_BINS)
    pos = np.bincount(bins[y == 1], minlength=N_BINS)
    neg = np.bincount(bins[y == 0], minlength=N_BINS)
    psum = np.bincount(bins, weights=prob, minlength=N_BINS)
    p = np.clip(prob, _EPS, 1 - _EPS)
    logloss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum())
    correct = float(((prob >= 0.5) == (y == 1)).sum())
    return np.concatenate([pos, neg, psum, [logloss, correct, float(len(y))]]).astype(np.float64)


def histograms(prob: np.ndarray, y: np.ndarray, bins: int) -> np.ndarray:
    """Return a node's counts of positives, then negatives, in ``bins`` equal probability bins.

    Raises:
        ValueError: shapes differ, labels are not 0/1, or ``bins`` is not even and >= 2.
    """
    if bins < 2 or bins % 2:
        raise ValueError(f"bins must be even and >= 2, got {bins}")
    prob, y = _checked(prob, y)
    index = _bin_of(prob, bins)
    pos = np.bincount(index[y == 1], minlength=bins)
    neg = np.bincount(index[y == 0], minlength=bins)
    return np.concatenate([pos, neg]).astype(np.float64)


def _checked(prob: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if prob.shape != y.shape:
        raise ValueError("prob and y must have the same shape")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return prob, y


def _bin_of(prob: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((prob * bins).astype(np.int64), bins - 1)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Return P(score_pos > score_neg) + 0.5 P(tie) from histograms (ties: the same bin)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if not (n_pos > 0 and n_neg > 0):
        return float("nan")
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


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
    auc = _auc(pos, neg)
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


def metrics_from_histograms(summed: np.ndarray, bins: int) -> EvaluationMetrics:
    """Compute metrics from the sum over nodes of :func:`histograms` (noisy under DP).

    Negative counts (noise) are clipped to zero. AUC as :func:`metrics_from_sums` does;
    accuracy exactly (a prediction >= 0.5 is positive, and 0.5 is a bin edge); log-loss
    and ECE taking every prediction at its bin's centre; ``n`` is the summed count.

    Returns:
        The federated :class:`EvaluationMetrics`.

    Raises:
        ValueError: the vector is not ``2 * bins`` long or holds no example.
    """
    summed = np.asarray(summed, dtype=np.float64)
    if summed.shape != (2 * bins,):
        raise ValueError(f"expected {2 * bins} entries, got {summed.shape}")
    pos = np.clip(summed[:bins], 0, None)
    neg = np.clip(summed[bins:], 0, None)
    total = pos.sum() + neg.sum()
    if total <= 0.5:
        raise ValueError("the evaluation holds no example")
    centre = (np.arange(bins) + 0.5) / bins
    high = centre >= 0.5
    p = np.clip(centre, _EPS, 1 - _EPS)
    logloss = float((pos * -np.log(p) + neg * -np.log(1 - p)).sum())
    return EvaluationMetrics(
        n=int(round(total)),
        auc=_auc(pos, neg),
        accuracy=float((pos[high].sum() + neg[~high].sum()) / total),
        log_loss=logloss / float(total),
        ece=float(np.abs(centre * (pos + neg) - pos).sum() / total),
        prevalence=float(pos.sum() / total),
    )
