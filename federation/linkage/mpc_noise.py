"""Differential privacy inside the secure computation: noise shared before anything is opened.

With a ``[privacy]`` table a linked job adds Gaussian noise to every vector it opens,
*inside* MPyC: every party (each holder and the helper) draws its own share of discrete
Gaussian noise (OpenDP's sampler, :func:`federation.analytics.dp_noise.
discrete_gaussian_noise`, on a grid of step :data:`federation.analytics.glm_noise.
GRANULARITY` of each entry's per-row bound), secret-shares it like any other input, and
the shares are added to the secret aggregate before the single opening. No party ever
holds the total noise.

Calibration is the horizontal kinds' (:class:`federation.analytics.glm_noise.GlmNoise`
for a GLM, :func:`federation.analytics.stats.stats_noise_scale` for statistics): the
opened vector, divided entry by entry by its public per-row bound, moves by at most 1 per
entry when one resident enters or leaves the cohort, and ``σ`` is calibrated with the PLD
accountant for the job's (ε, δ) over its releases. Shamir sharing tolerates ``t`` colluding
parties (``t = (m - 1) // 2`` of ``m``); colluders know their own shares, so each of the
``m`` shares has scale ``σ / sqrt(m - t)``: the noise that any ``t`` parties do not know
has scale ``σ`` at least, and the researcher, who knows no share, faces
``σ · sqrt(m / (m - t))``. The ε charged at every holder is the one for ``σ``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LinkedDp", "secure_noise"]


@dataclass(frozen=True)
class LinkedDp:
    """The public DP settings of one linked computation (identical at every party).

    Attributes:
        epsilon: ε the noise is calibrated for (the job's, after the calibration margin).
        delta: the job's δ.
        sigma: noise scale of the per-row-normalised opened vector that no ``threshold``
            parties know (PLD-calibrated).
        parties: parties adding a share (holders and helper).
        threshold: colluding parties Shamir sharing tolerates.
        max_rows_per_subject: rows one resident contributes (multiplies every bound).
        rounds: releases the noise is calibrated for (a GLM's Newton rounds; 1 for stats).
        y_bound: public bound on ``|y|`` (a GLM's outcome is clipped to it).
        bounds: per statistics variable, its public ``[low, high]`` (values are clipped).
    """

    epsilon: float
    delta: float
    sigma: float
    parties: int
    threshold: int
    max_rows_per_subject: int = 1
    rounds: int = 1
    y_bound: float = 1.0
    bounds: tuple[tuple[float, float], ...] = ()

    @property
    def share_scale(self) -> float:
        """Return one party's share of the noise scale, ``σ / sqrt(parties - threshold)``."""
        return self.sigma / math.sqrt(self.parties - self.threshold)

    @property
    def total_scale(self) -> float:
        """Return the scale of the summed noise, ``σ · sqrt(parties / (parties - threshold))``."""
        return self.share_scale * math.sqrt(self.parties)

    def to_json_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LinkedDp | None:
        """Return the settings a :meth:`to_json_dict` mapping describes (None for None)."""
        if data is None:
            return None
        d = dict(data)
        d["bounds"] = tuple((float(a), float(b)) for a, b in d.get("bounds", ()))
        return cls(**d)

    def summary(self, holders: int) -> dict[str, Any]:
        """Return what a result states about where the noise came from."""
        return {
            "mode": "secret_shared",
            "noise_shares": self.parties,
            "collusion_threshold": self.threshold,
            "noise_scale_unknown_to_any_coalition": self.sigma,
            "noise_scale_total": self.total_scale,
            "nodes": holders,
        }


def secure_noise(mpc: Any, sectype: Any, per_unit: np.ndarray, dp: LinkedDp) -> Any:
    """Return the secret sum of every party's noise share (scale per entry: ``per_unit``).

    Each party draws its share here (discrete Gaussian of scale
    :attr:`LinkedDp.share_scale` on a grid of :data:`GRANULARITY` units, times
    ``per_unit`` and the rows-per-resident cap) and inputs it; nobody sees another's.

    Raises:
        ValueError: the runtime's parties or threshold differ from the job's.

    """
    from federation.analytics.dp_noise import discrete_gaussian_noise
    from federation.analytics.glm_noise import GRANULARITY

    if len(mpc.parties) != dp.parties or mpc.threshold != dp.threshold:
        raise ValueError("the runtime's parties or threshold differ from the job's DP settings")
    unit = np.asarray(per_unit, dtype=np.float64).ravel() * dp.max_rows_per_subject
    grid = discrete_gaussian_noise(unit.size, dp.share_scale / GRANULARITY) * GRANULARITY
    shares = mpc.input(sectype.array(grid * unit, integral=False))
    total = shares[0]
    for s in shares[1:]:
        total = total + s
    return total
