"""Runs statistics and GLM jobs on the embedded engine, by their plan.

The job's :class:`federation.plans.SumPlan` holds the scales, SecAgg+ settings, both
halves of a round, the DP charge and the release; this module wires it into the
coordinator's secure-sum ServerApp and the nodes' ClientApp, runs them, and draws the
plot. Only public information crosses from here to both sides: the job, the data
model's public bounds, an upper bound of any node's record count and the nodes' cell
floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordinator.server_app import RunOutcome, build_sum_server_app
from federation.embedded import run_embedded
from federation.plans import PlanInputs, SumPlan, plan_for
from federation.secure_sum import SumRecorder
from federation.spec import JobSpec
from nodes.client_app import RoundGate
from nodes.sources import NodeSource
from nodes.sum_client_app import build_sum_client_app

__all__ = [
    "embedded_plan",
    "run_analytics_job",
    "run_glm_job",
    "run_stats_job",
    "run_sum_job",
]


def embedded_plan(
    spec: JobSpec, nodes: list[NodeSource], *, max_records: int, min_cell_count: int = 0
) -> SumPlan:
    """Return the plan of a secure-sum job over ``nodes`` (declared ranges: the data model's).

    Raises:
        ValueError: not a secure-sum kind, or the plan refuses the spec.
    """
    inputs = PlanInputs(n_nodes=len(nodes), max_records=max_records, min_cell_count=min_cell_count)
    plan = plan_for(spec, inputs)
    if not isinstance(plan, SumPlan):
        raise ValueError(f"kind: {spec.kind!r} is not a secure-sum job")
    return plan


def run_sum_job(
    spec: JobSpec,
    nodes: list[NodeSource],
    *,
    job_id: str,
    max_records: int,
    gates: dict[str, RoundGate] | None = None,
    min_cell_count: int = 0,
    on_round: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run a secure-sum job (``stats``, ``glm``) over ``nodes`` by its plan.

    Returns:
        The result JSON: how the run ended, the rounds, and the plan's release (or
        ``status`` failed with the reason; a refusal such as separation releases nothing).

    Raises:
        ValueError: not a secure-sum kind, or the plan refuses the spec (a variable
            without public bounds).
    """
    plan = embedded_plan(spec, nodes, max_records=max_records, min_cell_count=min_cell_count)
    recorder, outcome = SumRecorder(on_round=on_round), RunOutcome()
    server = build_sum_server_app(
        initial=plan.initial,
        n_nodes=len(nodes),
        max_rounds=plan.max_rounds,
        min_nodes=spec.min_nodes,
        secagg=plan.secagg,
        fit_config={"job_id": job_id},
        step=plan.step,
        recorder=recorder,
        outcome=outcome,
    )
    client = build_sum_client_app(plan, job_id, nodes, gates)
    started = time.perf_counter()
    run_embedded(server, client, len(nodes))
    return {
        "job_id": job_id,
        "nodes": [n.name for n in nodes],
        "wall_seconds": round(time.perf_counter() - started, 2),
        **plan.report(outcome.status, outcome.reason, recorder),
    }


def run_glm_job(
    spec: JobSpec,
    nodes: list[NodeSource],
    *,
    job_id: str,
    max_records: int,
    gates: dict[str, RoundGate] | None = None,
    on_round: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Fit a federated GLM by Newton–Raphson over secure sums; one round per iteration.

    Returns:
        The result (``coefficients`` per term, deviance, AIC, ...), or ``status`` failed
        with the reason (a refusal such as separation releases nothing).
    """
    return run_sum_job(
        spec, nodes, job_id=job_id, max_records=max_records, gates=gates, on_round=on_round
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

    Raises:
        ValueError: a variable has no public bounds.
    """
    from hamanasu.plots import plot_rates

    result = run_sum_job(
        spec,
        nodes,
        job_id=job_id,
        max_records=max(sizes.values()),
        gates=gates,
        min_cell_count=min_cell_count or 0,
    )
    if result["status"] != "succeeded":
        return result
    if spec.stats.group_by and any("proportion" in m for m in spec.stats.measures):
        try:
            plot_rates(result, spec.stats.variables[0], out / "rates.png")
            result["plot"] = "rates.png"
        except ValueError:
            pass
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
