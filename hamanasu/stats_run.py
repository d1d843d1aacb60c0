"""Wires statistics jobs for embedded runs: one secure sum, then release with DP and suppression."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.server_app import RunOutcome, build_sum_server_app
from federation.embedded import run_embedded
from federation.secure_sum import SumRecorder
from federation.spec import JobSpec
from nodes.client_app import RoundGate
from nodes.sources import NodeSource
from nodes.sum_client_app import build_sum_client_app

__all__ = ["resolve_stats_bounds", "run_stats_job"]


def resolve_stats_bounds(spec: JobSpec) -> JobSpec:
    """Return the spec with every variable's public bounds (the spec's, else the data model's).

    Raises:
        ValueError: a variable has no public bounds (``stats.bounds`` names it).
    """
    from federation.cdm import declared_ranges

    declared = declared_ranges(spec.domain)
    bounds = dict(spec.stats.bounds)
    for var in spec.stats.variables:
        if var not in bounds:
            if var not in declared:
                raise ValueError(f"stats.bounds: variable {var!r} needs public bounds [low, high]")
            bounds[var] = declared[var]
    return spec.model_copy(update={"stats": spec.stats.model_copy(update={"bounds": bounds})})


#: Noise is calibrated for ε × (1 − margin): OpenDP's zCDP conversion and the budget
#: ledger's RDP conversion differ in the fifth digit, and a node must never be charged
#: more than the job reserved.
CALIBRATION_MARGIN = 1e-3


def _dp_config(spec: JobSpec, n_nodes: int) -> Any:
    from federation.analytics.dp_noise import DpConfig

    if spec.privacy is None:
        return None
    return DpConfig(
        epsilon=spec.privacy.epsilon * (1 - CALIBRATION_MARGIN),
        delta=spec.privacy.delta,
        mechanism=spec.stats.dp_mechanism,
        mode=spec.stats.dp_mode,
        n_nodes=n_nodes,
    )


def run_stats_job(
    spec: JobSpec,
    nodes: list[NodeSource],
    *,
    job_id: str,
    out: Path,
    sizes: dict[str, int],
    gates: dict[str, RoundGate] | None = None,
    show: bool = True,
    min_cell_count: int | None = None,
) -> dict[str, Any]:
    """Run a statistics job and plot proportions by the first grouping variable.

    Each node's sums travel in one SecAgg+ round; the release carries DP noise and
    cell suppression.

    Returns:
        The result JSON (``cells``, ``suppressed``, ``dp``, ...), or status failed with the reason.
    """
    from federation.analytics.scaling import scale_for_secagg, unscale
    from federation.analytics.stats import _sigma, stats_finalize, stats_layout, stats_local
    from federation.analytics.sum_jobs import record_bound, sum_secagg
    from hamanasu.plots import plot_rates

    spec = resolve_stats_bounds(spec)
    layout = stats_layout(spec)
    bound = record_bound(max(sizes.values()))
    scale = layout.block_scales() * bound
    clip = spec.secure_aggregation.clipping_range
    dp = _dp_config(spec, len(nodes))
    secagg = sum_secagg(spec, len(nodes))
    min_cells = max(min_cell_count or 0, spec.stats.min_cell_count)
    state: dict[str, Any] = {}

    def step(_round: int, summed_scaled: np.ndarray) -> None:
        state["summed"] = unscale(summed_scaled, scale)
        return None

    def local(frame: Any, _params: np.ndarray, _config: dict[str, Any]) -> np.ndarray:
        node_dp = dp if dp is not None and dp.mode == "distributed" else None
        vector, _ = stats_local(frame, spec, dp=node_dp)
        return scale_for_secagg(vector, scale, clip)

    def mechanism(_round: int) -> tuple[float, dict[str, Any]]:
        sigma = _sigma(layout, dp)
        blocks = len(layout.blocks)
        if dp.mechanism == "laplace":
            return dp.epsilon, {"type": "laplace", "scale": sigma, "sensitivity": float(blocks)}
        return dp.epsilon, {"type": "gaussian", "sigma": sigma, "sensitivity": math.sqrt(blocks)}

    recorder, outcome = SumRecorder(), RunOutcome()
    server = build_sum_server_app(
        initial=np.zeros(1),
        n_nodes=len(nodes),
        max_rounds=1,
        min_nodes=spec.min_nodes,
        secagg=secagg,
        fit_config={"job_id": job_id},
        step=step,
        recorder=recorder,
        outcome=outcome,
    )
    client = build_sum_client_app(
        spec,
        job_id,
        nodes,
        local,
        gates,
        secure_aggregation=secagg is not None,
        mechanism=mechanism if dp is not None else None,
    )
    started = time.perf_counter()
    run_embedded(server, client, len(nodes))
    result: dict[str, Any] = {
        "job_id": job_id,
        "kind": "stats",
        "status": outcome.status,
        "reason": outcome.reason,
        "nodes": [n.name for n in nodes],
        "secure_aggregation": secagg is not None,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if outcome.status != "succeeded" or "summed" not in state:
        if outcome.status == "succeeded":
            result["status"], result["reason"] = "failed", "no secure sum was released"
        return result
    released = stats_finalize(
        state["summed"],
        layout,
        spec,
        min_cells,
        dp,
        n_contributing=len(recorder.nodes[-1]) if recorder.nodes else None,
    )
    result.update(released.to_json_dict())
    result["status"] = "succeeded"
    if spec.stats.group_by and any("proportion" in m for m in spec.stats.measures):
        try:
            plot_rates(result, spec.stats.variables[0], out / "rates.png")
            result["plot"] = "rates.png"
        except ValueError:
            pass
    return result
