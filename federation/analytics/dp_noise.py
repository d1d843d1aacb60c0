"""Calibrated DP noise for released aggregates, drawn by OpenDP's samplers.

Two mechanisms, both sampled by OpenDP (``opendp.measurements.make_gaussian`` /
``make_laplace`` with the ``contrib`` feature): Gaussian, calibrated with the
privacy-loss-distribution accountant of :mod:`policies.accounting` (dp_accounting's PLD:
exact for one Gaussian, the same accountant the budget ledger charges with, and 5-8 %
less noise than OpenDP's zCDP conversion for the same (ε, δ)); and Laplace (pure ε),
calibrated by a binary search over OpenDP's own privacy map.

Two modes:

* ``central``: the server adds the full noise to the securely summed vector. The
  researcher sees only noisy values; the coordinator (honest-but-curious, docs/architecture.md)
  sees the exact sum, which SecAgg+ already gives it.
* ``distributed``: each of ``K`` nodes adds its own share with variance ``σ²/K`` before
  SecAgg+, so only the sum carries the full noise and not even the coordinator sees an
  exact aggregate. The share is a *discrete* Gaussian on an integer grid of step
  ``granularity`` (in units of the block's sensitivity): integer noise survives SecAgg+'s
  integer arithmetic unchanged when the grid matches the quantisation step, and a sum of
  discrete Gaussians with per-node scale well above the grid step is, up to a
  negligible term (Kairouz, Liu, Steinke 2021, "The Distributed Discrete Gaussian
  Mechanism"), as private as one Gaussian of the summed variance; the reported ε uses
  the continuous Gaussian bound. A node that drops out removes its share: ε is then
  recomputed for the noise actually present (:func:`epsilon_for_gaussian`).
  Accounting the sum as one Gaussian is checked against dp_accounting's exact
  discrete-Gaussian PLD at the platform's grid scale (``tests/privacy/
  test_accounting_crosscheck.py``). Laplace has
  no distributed mode here (a sum of Laplace draws is not Laplace).

Sensitivity: the caller states an L2 (Gaussian) or L1 (Laplace) sensitivity of the
vector for one subject's records, which requires every summed value to be clipped to
public bounds on the node (see :mod:`federation.analytics.stats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

__all__ = [
    "DpConfig",
    "calibrate_gaussian",
    "calibrate_laplace",
    "discrete_gaussian_noise",
    "epsilon_for_gaussian",
    "gaussian_noise",
    "laplace_noise",
]


def _dp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True)
class DpConfig:
    """Differential privacy of a release.

    Attributes:
        epsilon: the ε each node's records are protected with (and charged per node).
        delta: δ of the Gaussian mechanism (ignored by Laplace).
        mechanism: ``gaussian`` or ``laplace``.
        mode: ``central`` (server adds the noise) or ``distributed`` (each node a share).
        n_nodes: nodes adding shares (distributed mode).
        granularity: grid step of the distributed discrete Gaussian, in units of each
            block's sensitivity.
        max_rows_per_subject: rows one subject may contribute (twins: 2); multiplies
            the sensitivity.
    """

    epsilon: float
    delta: float = 1e-6
    mechanism: Literal["gaussian", "laplace"] = "gaussian"
    mode: Literal["central", "distributed"] = "central"
    n_nodes: int = 1
    granularity: float = 1e-3
    max_rows_per_subject: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError("epsilon must be a positive number")
        if not 0 < self.delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if self.mechanism not in ("gaussian", "laplace"):
            raise ValueError("mechanism must be 'gaussian' or 'laplace'")
        if self.mode not in ("central", "distributed"):
            raise ValueError("mode must be 'central' or 'distributed'")
        if self.mode == "distributed" and self.mechanism != "gaussian":
            raise ValueError("the distributed mode needs the (discrete) Gaussian mechanism")
        if self.n_nodes < 1 or self.max_rows_per_subject < 1 or self.granularity <= 0:
            raise ValueError("n_nodes, max_rows_per_subject and granularity must be positive")


@lru_cache(maxsize=256)
def calibrate_gaussian(l2_sensitivity: float, epsilon: float, delta: float) -> float:
    """Return the smallest σ (to 0.1 % in ε) giving (ε, δ)-DP for the L2 sensitivity.

    Uses the PLD accountant (:func:`policies.accounting.calibrate_sigma`), so the ε the
    budget ledger charges for this σ never exceeds ``epsilon``.
    """
    from policies.accounting import calibrate_sigma

    mech = {"type": "gaussian", "sigma": "__x__", "sensitivity": float(l2_sensitivity)}
    return calibrate_sigma(mech, float(epsilon), float(delta), guess=float(l2_sensitivity))


def epsilon_for_gaussian(sigma: float, l2_sensitivity: float, delta: float) -> float:
    """Return the ε that Gaussian noise of scale ``sigma`` gives at ``delta`` (PLD accountant)."""
    from policies.accounting import compose_epsilon

    mech = {"type": "gaussian", "sigma": float(sigma), "sensitivity": float(l2_sensitivity)}
    return compose_epsilon([mech], float(delta))


@lru_cache(maxsize=256)
def calibrate_laplace(l1_sensitivity: float, epsilon: float) -> float:
    """Return the Laplace scale giving pure ε-DP for the L1 sensitivity (OpenDP map)."""
    dp = _dp()
    dom = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    met = dp.l1_distance(T=float)
    return float(
        dp.binary_search_param(
            lambda s: dp.m.make_laplace(dom, met, scale=s),
            d_in=float(l1_sensitivity),
            d_out=epsilon,
        )
    )


def gaussian_noise(size: int, sigma: float) -> np.ndarray:
    """Return ``size`` draws of N(0, σ²) from OpenDP's sampler."""
    dp = _dp()
    dom = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    meas = dp.m.make_gaussian(dom, dp.l2_distance(T=float), scale=float(sigma))
    return np.asarray(meas([0.0] * int(size)), dtype=np.float64)


def laplace_noise(size: int, scale: float) -> np.ndarray:
    """Return ``size`` draws of Laplace(0, scale) from OpenDP's sampler."""
    dp = _dp()
    dom = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    meas = dp.m.make_laplace(dom, dp.l1_distance(T=float), scale=float(scale))
    return np.asarray(meas([0.0] * int(size)), dtype=np.float64)


def discrete_gaussian_noise(size: int, sigma: float) -> np.ndarray:
    """Return ``size`` integer draws of the discrete Gaussian of scale ``sigma`` (OpenDP)."""
    dp = _dp()
    dom = dp.vector_domain(dp.atom_domain(T=int))
    meas = dp.m.make_gaussian(dom, dp.l2_distance(T=int), scale=float(sigma))
    return np.asarray(meas([0] * int(size)), dtype=np.int64)
