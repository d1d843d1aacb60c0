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
    GlmResult,
    NewtonInfo,
    glm_clip_rows,
    glm_dp_perturb,
    glm_fit,
    glm_layout,
    glm_local_statistics,
    glm_newton_step,
    glm_public_scale,
    glm_result,
)
from federation.analytics.scaling import scale_for_secagg, simulate_secure_sum, unscale
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
    "scale_for_secagg",
    "simulate_secure_sum",
    "stats_finalize",
    "stats_layout",
    "stats_local",
    "suppress_cells",
    "table_lines",
    "unscale",
]
