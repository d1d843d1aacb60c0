"""Public descriptions of linked computations, identical at every party.

A party's private data never appear here: only which party holds which term, public
scalings (from declared column ranges), the cohort size and the model settings. The
descriptions travel as JSON to each party's process.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "LinkedGlmJob",
    "LinkedStatsJob",
    "Term",
    "job_from_json",
    "reciprocal_steps",
    "term_transform",
]


@dataclass(frozen=True)
class Term:
    """One model term: its name, the party holding it and its public scaling.

    Inside the computation the term is ``(x - center) / scale``, within [-1, 1] when
    ``center`` and ``scale`` come from the declared range (mid-point, half-width). The
    intercept is the term ``center = 0, scale = 1`` held by the outcome's party.
    """

    name: str
    party: int
    center: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class LinkedGlmJob:
    """A linked GLM: family, terms (intercept first when present), outcome party, cohort size.

    ``dp`` is the public :class:`federation.linkage.mpc_noise.LinkedDp` (as JSON) when the
    job has a ``[privacy]`` table.
    """

    family: str
    terms: tuple[Term, ...]
    label_party: int
    n: int
    max_iterations: int = 25
    tolerance: float = 1e-9
    frac_bits: int = 32
    dp: dict[str, Any] | None = None
    kind: str = "glm"

    def party_terms(self, party: int) -> list[int]:
        """Return the indices of the terms ``party`` holds, in model order."""
        return [j for j, t in enumerate(self.terms) if t.party == party]

    @property
    def holders(self) -> list[int]:
        """Return the parties holding terms or the outcome, in increasing order."""
        return sorted({t.party for t in self.terms} | {self.label_party})

    def to_json_dict(self) -> dict[str, Any]:
        """Return the description as JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class LinkedStatsJob:
    """Linked statistics: cell counts, sums and sums of squares over the cohort.

    ``group`` lists the grouping variables as ``(name, party, number of levels)`` (cells
    row-major, first variable slowest, as :func:`federation.analytics.stats.stats_layout`);
    ``variables`` the value variables as ``(name, party)``; ``dp`` as for
    :class:`LinkedGlmJob`.
    """

    group: tuple[tuple[str, int, int], ...]
    variables: tuple[tuple[str, int], ...]
    n: int
    frac_bits: int = 32
    dp: dict[str, Any] | None = None
    kind: str = "stats"

    @property
    def holders(self) -> list[int]:
        """Return the parties holding a grouping or value variable, in increasing order."""
        return sorted({g[1] for g in self.group} | {v[1] for v in self.variables})

    def to_json_dict(self) -> dict[str, Any]:
        """Return the description as JSON-ready data."""
        return asdict(self)


def job_from_json(data: dict[str, Any]) -> LinkedGlmJob | LinkedStatsJob:
    """Return the job a :meth:`to_json_dict` mapping describes.

    Raises:
        ValueError: unknown kind.

    """
    d = dict(data)
    kind = d.get("kind")
    if kind == "glm":
        d["terms"] = tuple(Term(**t) for t in d["terms"])
        return LinkedGlmJob(**d)
    if kind == "stats":
        d["group"] = tuple((str(a), int(b), int(c)) for a, b, c in d["group"])
        d["variables"] = tuple((str(a), int(b)) for a, b in d["variables"])
        return LinkedStatsJob(**d)
    raise ValueError(f"unknown linked job kind {kind!r}")


def term_transform(terms: tuple[Term, ...]) -> np.ndarray:
    """Return ``M`` with ``z = M x`` (``x`` the original terms, intercept included).

    Centring is folded into the intercept row when the first term is an intercept
    (``center 0, scale 1``), so ``beta_x = M' beta_z``, score ``g_x = M^-1 g_z`` and
    information ``H_x = M^-1 H_z M^-T``.

    Raises:
        ValueError: a centred term without an intercept to absorb the centre.

    """
    p = len(terms)
    m = np.zeros((p, p))
    has_intercept = terms[0].center == 0.0 and terms[0].scale == 1.0 and p > 0
    for j, t in enumerate(terms):
        m[j, j] = 1.0 / t.scale
        if t.center != 0.0:
            if not has_intercept or j == 0:
                raise ValueError(f"term {t.name!r} is centred but the model has no intercept")
            m[j, 0] = -t.center / t.scale
    return m


def reciprocal_steps(d_max: float, frac_bits: int) -> int:
    """Return the Newton steps that bring ``1/d'`` to ``frac_bits`` for ``d'`` in [2/d_max, 1].

    The error after the first step from ``c = 1`` is ``(1 - d')**2``, squaring each step.
    """
    lo = 2.0 / d_max
    if lo >= 1.0 - 1e-15:
        return 1
    need = (frac_bits + 2) * math.log(2.0) / -math.log1p(-lo)
    return max(1, math.ceil(math.log2(need)))
