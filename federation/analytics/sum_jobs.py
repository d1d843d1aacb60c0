"""Both halves of a statistics or GLM job as plain functions, for any engine.

A secure-sum job has a node half (the local vector each node sends through SecAgg+,
and the privacy charge of a round) and a server half (the ``step`` that turns each
round's sum into the next broadcast, and the release at the end). The embedded engine
wires them in :mod:`hamanasu.stats_run` / :mod:`hamanasu.analytics_run`; the deployment
engine builds them here from public information only (the job, the data model's
declared ranges, an upper bound of any node's record count, the number of nodes), so
a SuperNode's ClientApp and the ServerApp, in different processes, agree on scales.

The maths is the same as the embedded wiring's, line for line: the results of both
engines match exactly where no noise applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federation.secagg import SecAggSettings
from federation.spec import JobSpec

__all__ = [
    "CALIBRATION_MARGIN",
    "GlmPlan",
    "StatsPlan",
    "record_bound",
    "resolve_stats_bounds",
    "sum_plan",
    "sum_secagg",
]

#: Noise is calibrated for ε × (1 − margin) (see :mod:`hamanasu.stats_run`).
CALIBRATION_MARGIN = 1e-3

Ranges = Mapping[str, tuple[float, float]]


def record_bound(max_records: int) -> int:
    """Return the public power-of-two bound of a node's record count used for scaling."""
    return int(2 ** math.ceil(math.log2(max(max_records, 2))))


def sum_secagg(spec: JobSpec, n_nodes: int) -> SecAggSettings | None:
    """Return the SecAgg+ settings of a secure-sum job (weight 1 per node), or None."""
    sa = spec.secure_aggregation
    if not sa.enabled:
        return None
    return SecAggSettings.for_job(
        n_nodes,
        1,
        clipping_range=sa.clipping_range,
        reconstruction_threshold=sa.reconstruction_threshold,
        timeout=sa.timeout,
        max_retries=sa.max_retries,
    )


def resolve_stats_bounds(spec: JobSpec, declared: Ranges) -> JobSpec:
    """Return the spec with every variable's public bounds (the spec's, else ``declared``).

    Raises:
        ValueError: a variable has no public bounds (``stats.bounds`` names it).
    """
    bounds = dict(spec.stats.bounds)
    for var in spec.stats.variables:
        if var not in bounds:
            if var not in declared:
                raise ValueError(f"stats.bounds: variable {var!r} needs public bounds [low, high]")
            low, high = declared[var]
            bounds[var] = (float(low), float(high))
    return spec.model_copy(update={"stats": spec.stats.model_copy(update={"bounds": bounds})})


@dataclass
class StatsPlan:
    """A statistics job: one secure sum, then DP release and cell suppression."""

    spec: JobSpec
    n_nodes: int
    max_records: int
    min_cell_count: int = 0
    summed: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        from federation.analytics.dp_noise import DpConfig
        from federation.analytics.stats import stats_layout

        self.layout = stats_layout(self.spec)
        self.scale = self.layout.block_scales() * record_bound(self.max_records)
        self.clip = self.spec.secure_aggregation.clipping_range
        privacy = self.spec.privacy
        self.dp = (
            None
            if privacy is None
            else DpConfig(
                epsilon=privacy.epsilon * (1 - CALIBRATION_MARGIN),
                delta=privacy.delta,
                mechanism=self.spec.stats.dp_mechanism,
                mode=self.spec.stats.dp_mode,
                n_nodes=self.n_nodes,
            )
        )
        self.secagg = sum_secagg(self.spec, self.n_nodes)
        self.max_rounds = 1
        self.initial = np.zeros(1)

    # -- node half -----------------------------------------------------------------------
    def local(self, frame: Any, _params: np.ndarray, _config: dict[str, Any]) -> np.ndarray:
        """Return the node's scaled sums (with its share of noise in distributed mode)."""
        from federation.analytics.scaling import scale_for_secagg
        from federation.analytics.stats import stats_local

        node_dp = self.dp if self.dp is not None and self.dp.mode == "distributed" else None
        vector, _ = stats_local(frame, self.spec, dp=node_dp)
        return scale_for_secagg(vector, self.scale, self.clip)

    def mechanism(self, _round: int) -> tuple[float, dict[str, Any]]:
        """Return the (ε, mechanism) a round charges at a node (only with privacy)."""
        from federation.analytics.stats import _sigma

        assert self.dp is not None
        sigma = _sigma(self.layout, self.dp)
        blocks = len(self.layout.blocks)
        if self.dp.mechanism == "laplace":
            return self.dp.epsilon, {
                "type": "laplace",
                "scale": sigma,
                "sensitivity": float(blocks),
            }
        return self.dp.epsilon, {
            "type": "gaussian",
            "sigma": sigma,
            "sensitivity": math.sqrt(blocks),
        }

    # -- server half ---------------------------------------------------------------------
    def step(self, _round: int, summed_scaled: np.ndarray) -> None:
        """Keep the round's sum (unscaled); a statistics job is done after one round."""
        from federation.analytics.scaling import unscale

        self.summed = unscale(summed_scaled, self.scale)

    def release(self, n_contributing: int | None) -> dict[str, Any]:
        """Return the released result (cells, suppression, DP), or failed with the reason."""
        from federation.analytics.stats import stats_finalize

        if self.summed is None:
            return {"status": "failed", "reason": "no secure sum was released"}
        min_cells = max(self.min_cell_count, self.spec.stats.min_cell_count)
        released = stats_finalize(
            self.summed, self.layout, self.spec, min_cells, self.dp, n_contributing=n_contributing
        )
        return {**released.to_json_dict(), "status": "succeeded"}


@dataclass
class GlmPlan:
    """A GLM job: Newton–Raphson over secure sums, one round per iteration."""

    spec: JobSpec
    n_nodes: int
    max_records: int
    declared: Ranges
    min_cell_count: int = 0

    def __post_init__(self) -> None:
        from federation.analytics.glm_round import glm_term_bounds, glm_term_names

        self.secagg = sum_secagg(self.spec, self.n_nodes)
        self.clip = self.spec.secure_aggregation.clipping_range
        self.bound = record_bound(self.max_records)
        self.names = glm_term_names(self.spec)
        self.term_bounds = glm_term_bounds(self.spec, self.declared)
        self.max_rounds = self.spec.glm.max_iterations + 1
        self.initial = np.zeros(len(self.names))
        self.beta = self.initial.copy()
        self.info: Any = None
        self.result: Any = None

    # -- node half -----------------------------------------------------------------------
    def local(self, frame: Any, beta: np.ndarray, _config: dict[str, Any]) -> np.ndarray:
        """Return the node's scaled GLM statistics at the broadcast ``beta``."""
        from federation.analytics.glm_round import glm_node_vector

        return glm_node_vector(
            frame, self.spec, beta, self.term_bounds, self.bound, self.clip, min_events=10
        )

    mechanism = None

    # -- server half ---------------------------------------------------------------------
    def step(self, _round: int, summed_scaled: np.ndarray) -> np.ndarray | None:
        """Take one Newton step from the round's sum; return the next ``beta`` or None if done.

        Raises:
            federation.analytics.GlmRefusal: the fit cannot be released (separation, too
                few events per parameter).
        """
        from federation.analytics.glm import glm_newton_step, glm_result
        from federation.analytics.glm_round import glm_unscale_sum

        summed = glm_unscale_sum(
            summed_scaled, self.spec, self.beta, self.term_bounds, self.bound, self.clip
        )
        beta_new, info = glm_newton_step(
            summed,
            self.beta,
            self.spec.glm.family,
            previous=self.info,
            tolerance=self.spec.glm.tolerance,
            min_events_per_parameter=self.spec.glm.min_events_per_parameter,
            rcond=1e-7 if self.secagg else 1e-10,
        )
        if info.converged:
            self.result = glm_result(
                summed, self.beta, self.spec.glm.family, self.names, info.iteration
            )
            return None
        self.beta, self.info = beta_new, info
        return beta_new

    def release(self, _n_contributing: int | None) -> dict[str, Any]:
        """Return the fitted model, or failed when the fit released nothing."""
        if self.result is None:
            return {"status": "failed", "reason": "the fit ended without a released result"}
        out = {**self.result.to_json_dict(), "status": "succeeded"}
        if self.secagg is not None:
            out["secagg_resolution"] = self.secagg.resolution
        return out


def sum_plan(
    spec: JobSpec,
    n_nodes: int,
    max_records: int,
    declared: Ranges,
    min_cell_count: int = 0,
) -> StatsPlan | GlmPlan:
    """Return the plan of a ``stats`` or ``glm`` job.

    Raises:
        ValueError: another kind, or a statistics variable without public bounds.
    """
    if spec.kind == "stats":
        return StatsPlan(resolve_stats_bounds(spec, declared), n_nodes, max_records, min_cell_count)
    if spec.kind == "glm":
        return GlmPlan(spec, n_nodes, max_records, declared, min_cell_count)
    raise ValueError(f"kind: {spec.kind!r} is not a secure-sum job")
