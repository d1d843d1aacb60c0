"""Distributed DP noise on a federated GLM's securely summed gradient and Hessian.

Every Newton iteration releases one secure sum of the nodes' statistics (score,
information, deviance, counts: :func:`federation.analytics.glm.glm_local_statistics`).
Each entry of a node's vector moves, per row, by at most its public per-row bound ``u``
(what :func:`federation.analytics.glm.glm_public_scale` divides by before SecAgg+: term
bounds, |y| bound, and the broadcast coefficients, which bound the linear predictor), so
the vector divided by ``m · u`` (``m`` rows per resident, see
:mod:`federation.privacy_unit`) moves by at most 1 per entry when one resident is added or
removed: L2 sensitivity ``Δ = sqrt(entries)``.

Each node adds, before SecAgg+, a discrete Gaussian share (OpenDP) of scale ``σ / sqrt(K)``
on a grid of step :data:`GRANULARITY` of ``m · u``; the sum of the ``K`` shares carries
Gaussian noise of scale ``σ`` (Kairouz, Liu, Steinke 2021), so neither the coordinator nor
the researcher sees an exact sum. ``σ`` is calibrated with the PLD accountant
(:func:`policies.accounting.calibrate_sigma`) so that the job's ``max_iterations + 1``
rounds, each a Gaussian release of ``σ / Δ``, compose to the job's (ε, δ); every node is
charged per round actually run, and a node that drops out leaves less noise (the result
reports the ε of the noise present).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from federation.analytics.dp_noise import discrete_gaussian_noise

__all__ = ["GRANULARITY", "GlmNoise"]

#: Grid step of the nodes' discrete Gaussian shares, in units of ``m · u``.
GRANULARITY = 1e-3
#: Noise tails the public record bound leaves room for (standard deviations of a share).
_TAIL = 7.0


@dataclass(frozen=True)
class GlmNoise:
    """The GLM job's DP mechanism: fixed by its spec and the public inputs alone.

    Attributes:
        epsilon: the ε the job's rounds may spend at each node (after any margin).
        delta: the job's δ.
        rounds: rounds the noise is calibrated for (the Newton loop's maximum).
        n_nodes: nodes adding shares.
        entries: length of the statistics vector.
        max_rows_per_subject: rows one resident may contribute.
        l2_sensitivity: what one resident moves the normalised vector by in L2, when fewer
            entries than all can move (0: every entry, ``sqrt(entries)``). A training
            job's evaluation histograms use the same mechanism with 1: a resident's one
            held-out row is one count in one bin (:mod:`federation.evaluation_dp`).
    """

    epsilon: float
    delta: float
    rounds: int
    n_nodes: int
    entries: int
    max_rows_per_subject: int = 1
    l2_sensitivity: float = 0.0

    @property
    def sensitivity(self) -> float:
        """Return the L2 sensitivity of the normalised vector (one resident: sqrt(entries))."""
        return self.l2_sensitivity or math.sqrt(self.entries)

    @property
    def sigma(self) -> float:
        """Return σ, the summed noise's scale on the normalised vector (PLD-calibrated)."""
        return _calibrated_sigma(self.sensitivity, self.rounds, self.epsilon, self.delta)

    @property
    def share(self) -> float:
        """Return one node's share of the noise scale, ``σ / sqrt(K)``."""
        return self.sigma / math.sqrt(self.n_nodes)

    def headroom_rows(self) -> int:
        """Return the rows' worth of room a node's share needs within SecAgg+'s range."""
        return int(math.ceil(_TAIL * self.share * self.max_rows_per_subject))

    def round_mechanism(self) -> dict[str, Any]:
        """Return one round's release as the budget ledger records it."""
        return {"type": "gaussian", "sigma": self.sigma, "sensitivity": self.sensitivity}

    def epsilon_after(self, rounds: int, n_contributing: int | None = None) -> float:
        """Return the ε of ``rounds`` releases with the noise of ``n_contributing`` shares.

        Raises:
            ValueError: ``rounds`` is negative.
        """
        from policies.accounting import compose_epsilon

        if rounds < 0:
            raise ValueError("rounds must be >= 0")
        if rounds == 0:
            return 0.0
        k = self.n_nodes if n_contributing is None else n_contributing
        sigma = self.sigma * math.sqrt(max(k, 0) / self.n_nodes)
        if sigma <= 0:
            return math.inf
        mech = {"type": "gaussian", "sigma": sigma, "sensitivity": self.sensitivity}
        return compose_epsilon([{**mech, "count": rounds}], self.delta)

    def node_share(self, per_row: np.ndarray) -> np.ndarray:
        """Return a node's noise share in the units of its statistics (per-row bounds ``u``).

        Raises:
            ValueError: ``per_row`` does not have :attr:`entries` entries.
        """
        if per_row.shape != (self.entries,):
            raise ValueError(f"expected {self.entries} per-row bounds, got {per_row.shape}")
        grid = discrete_gaussian_noise(self.entries, self.share / GRANULARITY) * GRANULARITY
        return grid * per_row * self.max_rows_per_subject

    def noise_sd(self, per_row: np.ndarray, n_contributing: int | None = None) -> np.ndarray:
        """Return the SD of the summed noise in each entry (``n_contributing`` shares)."""
        k = self.n_nodes if n_contributing is None else n_contributing
        return self.sigma * math.sqrt(k / self.n_nodes) * per_row * self.max_rows_per_subject

    def summary(self, rounds_run: int, n_contributing: int | None) -> dict[str, Any]:
        """Return what the result states about the mechanism and the ε it spent."""
        from federation.privacy_unit import privacy_unit_summary

        return {
            "mechanism": "discrete_gaussian",
            "mode": "distributed",
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rounds_calibrated": self.rounds,
            "rounds_charged": rounds_run,
            "epsilon_charged_per_node": self.epsilon_after(rounds_run),
            "epsilon_effective": self.epsilon_after(rounds_run, n_contributing),
            "noise_scale": self.sigma,
            "sensitivity": self.sensitivity,
            "nodes": self.n_nodes,
            "nodes_contributing": self.n_nodes if n_contributing is None else n_contributing,
            **privacy_unit_summary(self.max_rows_per_subject),
        }


def _calibrated_sigma(sensitivity: float, rounds: int, epsilon: float, delta: float) -> float:
    from policies.accounting import calibrate_sigma

    mech = {"type": "gaussian", "sigma": "__x__", "sensitivity": sensitivity, "count": rounds}
    return calibrate_sigma(mech, epsilon, delta, guess=sensitivity * math.sqrt(rounds))
