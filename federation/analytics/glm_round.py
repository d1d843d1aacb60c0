"""One federated GLM round as both sides run it: the node's scaled statistics, the server's sums.

Both sides derive the same public scale from public information only (the job, the
public term bounds the launcher resolved, the largest node's record bound and the
broadcast coefficients), so the node divides by it before SecAgg+ and the server
multiplies the secure sum back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from federation.analytics.design import INTERCEPT, DesignError, build_design, design_from_job
from federation.analytics.formula import FormulaDesign, parse_formula
from federation.analytics.glm import GlmRefusal, glm_local_statistics, glm_public_scale
from federation.analytics.scaling import quantisation_sd, scale_for_secagg, unscale

__all__ = [
    "glm_extra_bounds",
    "glm_formula_design",
    "glm_has_intercept",
    "glm_node_vector",
    "glm_per_row_bounds",
    "glm_sum_noise_sd",
    "glm_term_bounds",
    "glm_term_names",
    "glm_unscale_sum",
]


def _public_levels(job: Any, column: str) -> list[int | str]:
    """Return ``column``'s public levels: the job's, else the data model's categories."""
    if column in job.glm.levels:
        return list(job.glm.levels[column])
    from federation.cdm import get_schema

    try:
        col = get_schema(job.domain).column(column)
    except KeyError:
        return []
    if col.kind == "category":
        return list(col.categories)
    return [0, 1] if col.kind == "bool" else []


def glm_formula_design(job: Any) -> FormulaDesign | None:
    """Return the public design of the job's formula, or None for a feature-list job.

    Raises:
        DesignError: the formula is refused, or a categorical column has no public levels.
    """
    if getattr(job.glm, "formula", None) is None:
        return None
    formula = parse_formula(job.glm.formula)
    levels = {c: _public_levels(job, c) for c in formula.categorical}
    return FormulaDesign(formula, levels, job.glm.weights)


def glm_term_names(job: Any) -> list[str]:
    """Return the design's term names, the intercept (if any) first.

    Raises:
        DesignError: the design cannot be built from public information.
    """
    formula = glm_formula_design(job)
    if formula is not None:
        return formula.term_names
    return design_from_job(job.glm, job.features).term_names


def glm_has_intercept(job: Any) -> bool:
    """Return whether the design's first term is an intercept (a column of ones)."""
    formula = glm_formula_design(job)
    if formula is not None:
        return formula.formula.intercept
    return design_from_job(job.glm, job.features).term_names[:1] == [INTERCEPT]


def _ranges(
    job: Any, declared: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    return {**{k: tuple(v) for k, v in declared.items()}, **dict(job.glm.bounds)}


def glm_extra_bounds(job: Any, declared: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    """Return public bounds of ``|offset|`` (0 without one) and of a frequency weight (1).

    Raises:
        DesignError: the offset's or the weights' column has no public range, or the
            weights' range is not within ``[0, inf)``.
    """
    ranges = _ranges(job, declared)
    formula = glm_formula_design(job)
    offset = 0.0 if formula is None else formula.offset_bound(ranges)
    weight = 1.0
    if job.glm.weights:
        rng = ranges.get(job.glm.weights)
        if rng is None or float(rng[0]) < 0 or float(rng[1]) <= 0:
            raise DesignError(
                f"glm.bounds: weights {job.glm.weights!r} need a public range [low >= 0, high > 0]"
            )
        weight = float(rng[1])
    return offset, weight


def glm_term_bounds(job: Any, declared: Mapping[str, tuple[float, float]]) -> list[float]:
    """Return a public bound on ``|x_j|`` per term: 1 for the intercept and dummies.

    A numeric column's bound comes from ``job.glm.bounds``, else from ``declared`` (the
    data model's ranges).

    Raises:
        DesignError: a numeric column has no public range.
    """
    formula = glm_formula_design(job)
    if formula is not None:
        return formula.term_bounds(_ranges(job, declared))
    design = design_from_job(job.glm, job.features)
    bounds = [1.0] if design.intercept else []
    for feat in design.features:
        if feat in design.categorical:
            bounds += [1.0] * (len(design.levels[feat]) - 1)
            continue
        rng = job.glm.bounds.get(feat) or declared.get(feat)
        if rng is None:
            raise DesignError(f"glm.bounds: feature {feat!r} needs a public range [low, high]")
        bounds.append(max(abs(float(rng[0])), abs(float(rng[1])), 1e-12))
    return bounds


def glm_node_vector(
    frame: pd.DataFrame,
    job: Any,
    beta: np.ndarray,
    term_bounds: Sequence[float],
    max_records: int,
    clipping_range: float,
    min_events: int = 0,
    noise_share: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    extra_bounds: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Return a node's GLM statistics at ``beta``, divided by the public scale and range-checked.

    ``noise_share(per_row)``, when given, returns the node's DP noise share for the
    statistics' per-row bounds (:func:`glm_per_row_bounds`); it is added before scaling.
    ``extra_bounds`` are the public offset and weight bounds (:func:`glm_extra_bounds`).

    Raises:
        GlmRefusal: too few events at this node, or an invalid outcome.
        DesignError: the data do not fit the design.
        federation.errors.ValueRangeError: a scaled entry would exceed the clipping range.
    """
    formula = glm_formula_design(job)
    offset = weights = None
    if formula is not None:
        x, offset, weights = formula.matrices(frame)
    else:
        x = build_design(frame, design_from_job(job.glm, job.features))
        if job.glm.weights:
            weights = pd.to_numeric(frame[job.glm.weights], errors="coerce").to_numpy(
                dtype=np.float64
            )
    y = pd.to_numeric(frame[job.label], errors="coerce").to_numpy(dtype=np.float64)
    if len(x) > max_records:
        raise GlmRefusal("too_many_records", f"{len(x)} rows exceed the public bound {max_records}")
    if weights is not None and (weights > extra_bounds[1]).any():
        raise DesignError(f"weights {job.glm.weights!r}: a weight exceeds its public bound")
    local = glm_local_statistics(
        x, y, beta, job.glm.family, min_events=min_events, offset=offset, weights=weights
    )
    if noise_share is not None:
        local = local + noise_share(glm_per_row_bounds(job, beta, term_bounds, extra_bounds))
    scale = _scale(job, term_bounds, max_records, beta, clipping_range, extra_bounds)
    return scale_for_secagg(local, scale, clipping_range)


def glm_per_row_bounds(
    job: Any,
    beta: np.ndarray,
    term_bounds: Sequence[float],
    extra_bounds: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Return the public bound of what one row adds to each entry of the statistics at ``beta``."""
    return _scale(job, term_bounds, 1, beta, 1.0, extra_bounds)


def _scale(
    job: Any,
    term_bounds: Sequence[float],
    max_records: int,
    beta: np.ndarray,
    clipping_range: float,
    extra_bounds: tuple[float, float],
) -> np.ndarray:
    return glm_public_scale(
        job.glm.family,
        term_bounds,
        max_records,
        beta,
        clipping_range,
        job.glm.y_bound,
        offset_bound=extra_bounds[0],
        weight_bound=extra_bounds[1],
    )


def glm_unscale_sum(
    summed: np.ndarray,
    job: Any,
    beta: np.ndarray,
    term_bounds: Sequence[float],
    max_records: int,
    clipping_range: float,
    *,
    extra_bounds: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Return the plain sum of the nodes' statistics from the secure sum of their scaled vectors."""
    scale = _scale(job, term_bounds, max_records, beta, clipping_range, extra_bounds)
    return unscale(summed, scale)


def glm_sum_noise_sd(
    job: Any,
    beta: np.ndarray,
    term_bounds: Sequence[float],
    max_records: int,
    clipping_range: float,
    resolution: float,
    n_nodes: int,
    *,
    extra_bounds: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Return the SD of SecAgg+'s quantisation error in each entry of the unscaled GLM sum."""
    scale = _scale(job, term_bounds, max_records, beta, clipping_range, extra_bounds)
    return quantisation_sd(scale, resolution, n_nodes)
