"""Federated statistics and exact federated regression: node-side sums, server-side maths."""

# Names are loaded from their modules on first use (PEP 562), so a process that needs one
# part (an MPC party needs the Newton loop, not pandas or scipy.stats) imports no more.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager: the function shares its module's name, and a later import of the module would
# otherwise leave the module, not the function, under this name. It needs only numpy.
from federation.analytics.glm_result import GlmResult, glm_result

if TYPE_CHECKING:
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

#: Where each public name lives (module under ``federation.analytics``).
_LAZY_EXPORTS = {
    "DesignError": "design",
    "DesignSpec": "design",
    "INTERCEPT": "design",
    "build_design": "design",
    "design_from_job": "design",
    "Suppression": "disclosure",
    "suppress_cells": "disclosure",
    "table_lines": "disclosure",
    "DpConfig": "dp_noise",
    "calibrate_gaussian": "dp_noise",
    "calibrate_laplace": "dp_noise",
    "GlmLayout": "glm",
    "GlmRefusal": "glm",
    "glm_layout": "glm",
    "glm_local_statistics": "glm",
    "glm_public_scale": "glm",
    "glm_clip_rows": "glm_dp",
    "glm_dp_perturb": "glm_dp",
    "NewtonInfo": "glm_newton",
    "NewtonLoop": "glm_newton",
    "glm_fit": "glm_newton",
    "glm_newton_step": "glm_newton",
    "quantisation_sd": "scaling",
    "scale_for_secagg": "scaling",
    "simulate_secure_sum": "scaling",
    "unscale": "scaling",
    "StatsError": "stats",
    "StatsLayout": "stats",
    "StatsResult": "stats",
    "stats_finalize": "stats",
    "stats_layout": "stats",
    "stats_local": "stats",
}

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


def __getattr__(name: str) -> Any:
    """Return the public ``name``, importing its module on first use.

    Raises:
        AttributeError: ``name`` is not one of this package's names.
    """
    home = _LAZY_EXPORTS.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
