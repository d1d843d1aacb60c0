"""Federated statistics and exact federated regression: node-side sums, server-side maths."""

from federation.analytics.design import (
    INTERCEPT,
    DesignError,
    DesignSpec,
    build_design,
    design_from_job,
)
from federation.analytics.glm import (
    GlmLayout,
    GlmRefusal,
    GlmResult,
    NewtonInfo,
    glm_fit,
    glm_layout,
    glm_local_statistics,
    glm_newton_step,
    glm_public_scale,
    glm_result,
)
from federation.analytics.scaling import scale_for_secagg, simulate_secure_sum, unscale

__all__ = [
    "INTERCEPT",
    "DesignError",
    "DesignSpec",
    "GlmLayout",
    "GlmRefusal",
    "GlmResult",
    "NewtonInfo",
    "build_design",
    "design_from_job",
    "glm_fit",
    "glm_layout",
    "glm_local_statistics",
    "glm_newton_step",
    "glm_public_scale",
    "glm_result",
    "scale_for_secagg",
    "simulate_secure_sum",
    "unscale",
]
