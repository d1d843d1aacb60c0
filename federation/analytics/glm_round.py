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

from federation.analytics.design import DesignError, build_design, design_from_job
from federation.analytics.glm import GlmRefusal, glm_local_statistics, glm_public_scale
from federation.analytics.scaling import quantisation_sd, scale_for_secagg, unscale

__all__ = [
    "glm_node_vector",
    "glm_per_row_bounds",
    "glm_sum_noise_sd",
    "glm_term_bounds",
    "glm_term_names",
    "glm_unscale_sum",
]


def glm_term_names(job: Any) -> list[str]:
    """Return the design's term names, ``(Intercept)`` first."""
    return design_from_job(job.glm, job.features).term_names


def glm_term_bounds(job: Any, declared: Mapping[str, tuple[float, float]]) -> list[float]:
    """Return a public bound on ``|x_j|`` per term: 1 for the intercept and dummies.

    A numeric feature's bound comes from ``job.glm.bounds``, else from ``declared`` (the
    data model's ranges).

    Raises:
        DesignError: a numeric feature has no public range.
    """
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
) -> np.ndarray:
    """Return a node's GLM statistics at ``beta``, divided by the public scale and range-checked.

    ``noise_share(per_row)``, when given, returns the node's DP noise share for the
    statistics' per-row bounds (:func:`glm_per_row_bounds`); it is added before scaling.

    Raises:
        GlmRefusal: too few events at this node, or an invalid outcome.
        DesignError: the data do not fit the design.
        federation.errors.ValueRangeError: a scaled entry would exceed the clipping range.
    """
    design = design_from_job(job.glm, job.features)
    x = build_design(frame, design)
    y = pd.to_numeric(frame[job.label], errors="coerce").to_numpy(dtype=np.float64)
    if len(x) > max_records:
        raise GlmRefusal("too_many_records", f"{len(x)} rows exceed the public bound {max_records}")
    local = glm_local_statistics(x, y, beta, job.glm.family, min_events=min_events)
    scale = glm_public_scale(
        job.glm.family, term_bounds, max_records, beta, clipping_range, job.glm.y_bound
    )
    if noise_share is not None:
        local = local + noise_share(glm_per_row_bounds(job, beta, term_bounds))
    return scale_for_secagg(local, scale, clipping_range)


def glm_per_row_bounds(job: Any, beta: np.ndarray, term_bounds: Sequence[float]) -> np.ndarray:
    """Return the public bound of what one row adds to each entry of the statistics at ``beta``."""
    return glm_public_scale(job.glm.family, term_bounds, 1, beta, 1.0, job.glm.y_bound)


def glm_unscale_sum(
    summed: np.ndarray,
    job: Any,
    beta: np.ndarray,
    term_bounds: Sequence[float],
    max_records: int,
    clipping_range: float,
) -> np.ndarray:
    """Return the plain sum of the nodes' statistics from the secure sum of their scaled vectors."""
    scale = glm_public_scale(
        job.glm.family, term_bounds, max_records, beta, clipping_range, job.glm.y_bound
    )
    return unscale(summed, scale)


def glm_sum_noise_sd(
    job: Any,
    beta: np.ndarray,
    term_bounds: Sequence[float],
    max_records: int,
    clipping_range: float,
    resolution: float,
    n_nodes: int,
) -> np.ndarray:
    """Return the SD of SecAgg+'s quantisation error in each entry of the unscaled GLM sum."""
    scale = glm_public_scale(
        job.glm.family, term_bounds, max_records, beta, clipping_range, job.glm.y_bound
    )
    return quantisation_sd(scale, resolution, n_nodes)


_ = DesignError
