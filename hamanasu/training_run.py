"""Wires one training job together for an embedded run: ServerApp + ClientApp + runner.

The job's :class:`federation.plans.TrainPlan` holds the SecAgg+ sizing, the initial
model and both halves of a round; this module only wires it into the coordinator's
ServerApp and the nodes' ClientApp (the entry point is the one place that imports both).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.server_app import RunOutcome, build_training_server_app
from federation.embedded import run_embedded
from federation.plans import PlanInputs, TrainPlan, plan_for
from federation.privacy_unit import privacy_unit_summary
from federation.secagg import SecAggSettings
from federation.spec import JobSpec
from federation.training_round import RoundRecord, TrainingRecorder
from nodes.client_app import RoundGate, build_training_client_app
from nodes.sources import NodeSource

__all__ = ["TrainingRun", "run_training_job", "training_plan"]


@dataclass
class TrainingRun:
    """The outcome of an embedded training run."""

    job_id: str
    spec: JobSpec
    nodes: list[str]
    outcome: RunOutcome
    rounds: list[RoundRecord]
    parameters: list[np.ndarray] | None
    secagg: SecAggSettings | None
    wall_seconds: float
    node_sizes: dict[str, int] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """Return the JSON report of the run (per-round metrics, ε per node, settings)."""
        last_eps = TrainPlan.epsilon_by_node(self.rounds)
        privacy = self.spec.privacy
        return {
            "job_id": self.job_id,
            "kind": self.spec.kind,
            "status": self.outcome.status,
            "reason": self.outcome.reason,
            "model": self.spec.model,
            "features": self.spec.features,
            "label": self.spec.label,
            "nodes": self.nodes,
            "rounds_planned": self.spec.rounds,
            "secure_aggregation": self.outcome.secure_aggregation,
            "secagg_settings": None
            if self.secagg is None
            else self.secagg.summary(self.outcome.retried_rounds),
            "privacy": None
            if privacy is None
            else {
                "epsilon_target": privacy.epsilon,
                "delta": privacy.delta,
                "max_grad_norm": privacy.max_grad_norm,
                "accountant": privacy.accountant,
                **privacy_unit_summary(1),
                "epsilon_spent_by_node": last_eps,
            },
            "rows_dropped_by_node": TrainPlan.rows_dropped_by_node(self.rounds),
            "evaluation": self.evaluation,
            "data_sizes": self.node_sizes,
            "rounds": [r.as_dict() for r in self.rounds],
            "wall_seconds": round(self.wall_seconds, 2),
        }


def training_plan(spec: JobSpec, n_nodes: int, max_records: int) -> TrainPlan:
    """Return the plan of a training job over ``n_nodes`` nodes of at most ``max_records``.

    Raises:
        ValueError: not a training job.
    """
    plan = plan_for(spec, PlanInputs(n_nodes=n_nodes, max_records=max_records))
    if not isinstance(plan, TrainPlan):
        raise ValueError(f"kind: {spec.kind!r} is not a training job")
    return plan


def run_training_job(
    spec: JobSpec,
    nodes: list[NodeSource],
    *,
    job_id: str,
    max_records: int,
    gates: dict[str, RoundGate] | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> TrainingRun:
    """Run a training job over ``nodes`` on the embedded engine.

    ``max_records`` bounds any node's training set (it sets SecAgg+'s ``max_weight``).

    Returns:
        The :class:`TrainingRun` (its outcome says succeeded or failed, with the reason).

    Raises:
        ValueError: not a training job, the job needs more nodes than given, or SecAgg+
            has no record bound.
    """
    plan = training_plan(spec, len(nodes), max_records)
    initial = plan.initial_parameters()
    secagg = plan.secagg
    recorder = TrainingRecorder(on_round=on_round)
    outcome = RunOutcome()
    server_app = build_training_server_app(
        initial=initial,
        n_nodes=len(nodes),
        rounds=plan.rounds,
        min_nodes=spec.min_nodes,
        secagg=secagg,
        fit_config={"job_id": job_id},
        recorder=recorder,
        outcome=outcome,
        evaluation=plan.evaluation,
    )
    client_app = build_training_client_app(plan, job_id, nodes, gates)
    started = time.perf_counter()
    run_embedded(server_app, client_app, len(nodes))
    if (unfinished := plan.unfinished_reason(outcome.status)) is not None:
        outcome.status, outcome.reason = "failed", unfinished
    return TrainingRun(
        job_id=job_id,
        spec=spec,
        nodes=[n.name for n in nodes],
        outcome=outcome,
        rounds=recorder.rounds,
        parameters=recorder.final_parameters,
        secagg=secagg,
        wall_seconds=time.perf_counter() - started,
        evaluation=plan.evaluation_summary(recorder.rounds),
    )
