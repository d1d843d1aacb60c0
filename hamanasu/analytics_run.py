"""Wires statistics and GLM jobs for embedded runs: secure-sum ServerApp + node ClientApp.

Public information only crosses from the launcher to both sides: the job, the public
bounds of the data model, and an upper bound on any node's record count.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.server_app import RunOutcome, build_sum_server_app
from federation.analytics.sum_jobs import record_bound, sum_secagg
from federation.cdm import declared_ranges
from federation.embedded import run_embedded
from federation.secure_sum import SumRecorder
from federation.spec import JobSpec
from nodes.client_app import RoundGate
from nodes.sources import NodeSource
from nodes.sum_client_app import build_sum_client_app

__all__ = ["run_analytics_job", "run_glm_job"]


def run_glm_job(
    spec: JobSpec,
    nodes: list[NodeSource],
    *,
    job_id: str,
    max_records: int,
    gates: dict[str, RoundGate] | None = None,
    on_round: Any = None,
) -> dict[str, Any]:
    """Fit a federated GLM by Newton–Raphson over secure sums; one round per iteration.

    Returns:
        The result (``coefficients`` per term, deviance, AIC, ...), or ``status`` failed
        with the reason (a refusal such as separation releases nothing).
    """
    from federation.analytics.glm import glm_newton_step, glm_result
    from federation.analytics.glm_round import (
        glm_node_vector,
        glm_term_bounds,
        glm_term_names,
        glm_unscale_sum,
    )

    secagg = sum_secagg(spec, len(nodes))
    clip = spec.secure_aggregation.clipping_range
    bound = record_bound(max_records)
    names = glm_term_names(spec)
    term_bounds = glm_term_bounds(spec, declared_ranges(spec.domain))
    family = spec.glm.family
    state: dict[str, Any] = {"beta": np.zeros(len(names)), "info": None, "result": None}

    def step(_round: int, summed_scaled: np.ndarray) -> np.ndarray | None:
        beta = state["beta"]
        summed = glm_unscale_sum(summed_scaled, spec, beta, term_bounds, bound, clip)
        beta_new, info = glm_newton_step(
            summed,
            beta,
            family,
            previous=state["info"],
            tolerance=spec.glm.tolerance,
            min_events_per_parameter=spec.glm.min_events_per_parameter,
            rcond=1e-7 if secagg else 1e-10,
        )
        if info.converged:
            state["result"] = glm_result(summed, beta, family, names, info.iteration)
            return None
        state["beta"], state["info"] = beta_new, info
        return beta_new

    def local(frame: Any, beta: np.ndarray, _config: dict[str, Any]) -> np.ndarray:
        return glm_node_vector(frame, spec, beta, term_bounds, bound, clip, min_events=10)

    recorder, outcome = SumRecorder(on_round=on_round), RunOutcome()
    server = build_sum_server_app(
        initial=state["beta"],
        n_nodes=len(nodes),
        max_rounds=spec.glm.max_iterations + 1,
        min_nodes=spec.min_nodes,
        secagg=secagg,
        fit_config={"job_id": job_id},
        step=step,
        recorder=recorder,
        outcome=outcome,
    )
    client = build_sum_client_app(
        spec, job_id, nodes, local, gates, secure_aggregation=secagg is not None
    )
    started = time.perf_counter()
    run_embedded(server, client, len(nodes))
    result: dict[str, Any] = {
        "job_id": job_id,
        "kind": "glm",
        "status": outcome.status,
        "reason": outcome.reason,
        "nodes": [n.name for n in nodes],
        "secure_aggregation": secagg is not None,
        "rounds": len(recorder.sums),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if outcome.status == "succeeded" and state["result"] is not None:
        result.update(state["result"].to_json_dict())
        result["status"] = "succeeded"
        if secagg is not None:
            result["secagg_resolution"] = secagg.resolution
    elif outcome.status == "succeeded":
        result["status"], result["reason"] = "failed", "the fit ended without a released result"
    return result


def run_analytics_job(
    spec: JobSpec,
    nodes: list[NodeSource],
    *,
    job_id: str,
    out: Path,
    show: bool = True,
    gates: dict[str, RoundGate] | None = None,
) -> dict[str, Any]:
    """Run a ``stats`` or ``glm`` job over ``nodes`` and draw its plot into ``out``.

    Returns:
        The result JSON.

    Raises:
        ValueError: an unsupported job kind.
    """
    from hamanasu.plots import plot_forest
    from hamanasu.progress import round_progress
    from nodes.sources import read_columns

    sizes = {n.name: len(read_columns(n.data, spec.domain, spec.columns())) for n in nodes}
    if spec.kind == "glm":
        with round_progress(
            spec.glm.max_iterations + 1, f"fitting {spec.name} (Newton over SecAgg+)", enabled=show
        ) as advance:
            result = run_glm_job(
                spec,
                nodes,
                job_id=job_id,
                max_records=max(sizes.values()),
                gates=gates,
                on_round=advance,
            )
        if result["status"] == "succeeded":
            plot_forest(result, out / "forest.png")
            result["plot"] = "forest.png"
        return result
    if spec.kind == "stats":
        from hamanasu.stats_run import run_stats_job

        floors = [g.policy().min_cell_count for g in (gates or {}).values() if hasattr(g, "policy")]
        return run_stats_job(
            spec,
            nodes,
            job_id=job_id,
            out=out,
            sizes=sizes,
            gates=gates,
            show=show,
            min_cell_count=max(floors, default=0),
        )
    raise ValueError(f"kind: {spec.kind!r} is not an analytics job")
