"""Federated statistics and exact federated regression: node-side sums, server-side maths."""

from federation.analytics.design import (
    INTERCEPT,
    DesignError,
    DesignSpec,
    build_design,
    design_from_job,
)
from federation.analytics.disclosure import Suppression, suppress_cells, table_lines
from federation.analytics.dp_noise import DpConfig, calibrate_gaussian, calibrate_laplace
from federation.analytics.glm import (
    GlmLayout,
    GlmRefusal,
    glm_layout,
    glm_local_statistics,
    glm_public_scale,
)
from federation.analytics.glm_dp import glm_clip_rows, glm_dp_perturb
from federation.analytics.glm_newton import NewtonInfo, NewtonLoop, glm_fit, glm_newton_step
from federation.analytics.glm_result import GlmResult, glm_result
from federation.analytics.scaling import (
    quantisation_sd,
    scale_for_secagg,
    simulate_secure_sum,
    unscale,
)
from federation.analytics.stats import (
    StatsError,
    StatsLayout,
    StatsResult,
    stats_finalize,
    stats_layout,
    stats_local,
)

__all__ = [
    "DesignError",
    "DesignSpec",
    "DpConfig",
    "GlmLayout",
    "GlmRefusal",
    "GlmResult",
    "INTERCEPT",
    "NewtonInfo",
    "NewtonLoop",
    "StatsError",
    "StatsLayout",
    "StatsResult",
    "Suppression",
    "build_design",
    "calibrate_gaussian",
    "calibrate_laplace",
    "design_from_job",
    "glm_clip_rows",
    "glm_dp_perturb",
    "glm_fit",
    "glm_layout",
    "glm_local_statistics",
    "glm_newton_step",
    "glm_public_scale",
    "glm_result",
    "quantisation_sd",
    "scale_for_secagg",
    "simulate_secure_sum",
    "stats_finalize",
    "stats_layout",
    "stats_local",
    "suppress_cells",
    "table_lines",
    "unscale",
]
