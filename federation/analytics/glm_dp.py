"""Differential privacy for federated GLMs: row clipping on the nodes, Gaussian noise on sums."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from federation.analytics.glm import check_family, glm_layout

__all__ = ["glm_clip_rows", "glm_dp_perturb"]


def glm_clip_rows(X: np.ndarray, norm_bound: float) -> np.ndarray:  # noqa: N803
    """Scale down every row of ``X`` whose L2 norm exceeds ``norm_bound`` (node side, DP mode)."""
    norms = np.linalg.norm(X, axis=1)
    factor = np.minimum(1.0, norm_bound / np.maximum(norms, 1e-300))
    return X * factor[:, None]


def glm_dp_perturb(
    summed: np.ndarray,
    n_params: int,
    family: str,
    *,
    x_norm_bound: float,
    epsilon: float,
    delta: float,
    n_releases: int,
    eta_bound: float,
    y_bound: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Add calibrated Gaussian noise (OpenDP) to one round's summed GLM statistics.

    Sensitivity assumptions (one subject = one row, rows clipped on the node with
    :func:`glm_clip_rows` to ``||x||_2 <= x_norm_bound``, ``|y| <= y_bound``, and
    ``|x'beta| <= eta_bound`` for every broadcast ``beta``, e.g. enforced by the server
    capping ``||beta||_2 <= eta_bound / x_norm_bound``): the score moves by at most
    ``B r`` in L2 (``r`` = 1 binomial, ``y_bound + eta_bound`` gaussian), the packed
    information by at most ``w_max B²`` (Frobenius; ``w_max`` = 1/4 binomial, 1
    gaussian), the deviance by ``2 (eta_bound + log 2)`` (binomial) or ``r²``
    (gaussian), the counts by 1. Each block gets noise ``σ × its sensitivity``; σ is
    calibrated so that ``n_releases`` such rounds (the iteration budget, fixed in
    advance) compose, in zCDP, to (ε, δ). Poisson is not supported (its weights are
    unbounded).

    Returns:
        ``(noisy summed vector, report)``; the report states ε, δ, σ, the releases and
        the sensitivity assumptions.
    """
    from federation.analytics import dp_noise

    check_family(family)
    if family == "poisson":
        raise ValueError(
            "DP GLM supports binomial and gaussian only (poisson weights are unbounded)"
        )
    layout = glm_layout(n_params)
    resid = 1.0 if family == "binomial" else y_bound + eta_bound
    w_max = 0.25 if family == "binomial" else 1.0
    dev = 2.0 * (eta_bound + math.log(2.0)) if family == "binomial" else resid**2
    sens = {
        "grad": x_norm_bound * resid,
        "hess": w_max * x_norm_bound**2,
        "deviance": dev,
        "loglik": dev / 2.0,
        "n": 1.0,
        "sum_y": y_bound,
        "sum_y2": y_bound**2,
    }
    n_blocks = len(sens)
    l2 = math.sqrt(n_blocks * n_releases)
    sigma = dp_noise.calibrate_gaussian(l2, float(epsilon), float(delta))
    scales = np.zeros(layout.size)
    scales[:n_params] = sens["grad"]
    scales[n_params : n_params + layout.n_packed] = sens["hess"]
    for name in ("deviance", "loglik", "n", "sum_y", "sum_y2"):
        scales[layout.scalar_index(name)] = sens[name]
    noisy = (
        np.asarray(summed, dtype=np.float64) + dp_noise.gaussian_noise(layout.size, sigma) * scales
    )
    report = {
        "mechanism": "gaussian",
        "epsilon": float(epsilon),
        "delta": float(delta),
        "noise_scale": sigma,
        "releases": int(n_releases),
        "x_norm_bound": x_norm_bound,
        "eta_bound": eta_bound,
        "y_bound": y_bound,
        "block_sensitivity": sens,
        "unit": "one subject = one row; rows clipped to the norm bound on the node",
    }
    return noisy, report
