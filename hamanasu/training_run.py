"""Wires one training job together for an embedded run: ServerApp + ClientApp + runner.

This is the one place (with :mod:`hamanasu.embedded`) that imports both the coordinator
and the nodes, as DESIGN.md allows for the entry point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.server_app import RunOutcome, build_training_server_app
from federation.dp_training import get_parameters
from federation.embedded import run_embedded
from federation.models import build_model
from federation.secagg import SecAggSettings
from federation.spec import JobSpec
from federation.training_round import RoundRecord, TrainingRecorder
from nodes.client_app import RoundGate, build_training_client_app
from nodes.sources import NodeSource

__all__ = ["TrainingRun", "run_training_job"]


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

    def report(self) -> dict[str, Any]:
        """Return the JSON report of the run (per-round metrics, ε per node, settings)."""
        last_eps: dict[str, float] = {}
        for rec in self.rounds:
            last_eps.update(rec.epsilon_by_node)
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
                "epsilon_spent_by_node": last_eps,
            },
            "data_sizes": self.node_sizes,
            "rounds": [r.as_dict() for r in self.rounds],
            "wall_seconds": round(self.wall_seconds, 2),
        }


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
        ValueError: the job needs more nodes than given.
    """
    import torch

    if len(nodes) < spec.min_nodes:
        raise ValueError(f"min_nodes: the job needs {spec.min_nodes} nodes, {len(nodes)} given")
    torch.manual_seed(spec.seed)
    initial = get_parameters(
        build_model(spec.model, len(spec.features), spec.training.hidden_units)
    )
    sa = spec.secure_aggregation
    secagg = (
        SecAggSettings.for_job(
            len(nodes),
            sa.max_weight or max_records,
            clipping_range=sa.clipping_range,
            reconstruction_threshold=sa.reconstruction_threshold,
            timeout=sa.timeout,
            max_retries=sa.max_retries,
        )
        if sa.enabled
        else None
    )
    recorder = TrainingRecorder(on_round=on_round)
    outcome = RunOutcome()
    server_app = build_training_server_app(
        initial=initial,
        n_nodes=len(nodes),
        rounds=spec.rounds,
        min_nodes=spec.min_nodes,
        secagg=secagg,
        fit_config={"job_id": job_id},
        recorder=recorder,
        outcome=outcome,
    )
    client_app = build_training_client_app(
        spec, job_id, nodes, gates, secure_aggregation=secagg is not None
    )
    started = time.perf_counter()
    run_embedded(server_app, client_app, len(nodes))
    if outcome.status == "pending":
        outcome.status, outcome.reason = "failed", "the run ended without reaching its last round"
    return TrainingRun(
        job_id=job_id,
        spec=spec,
        nodes=[n.name for n in nodes],
        outcome=outcome,
        rounds=recorder.rounds,
        parameters=recorder.final_parameters,
        secagg=secagg,
        wall_seconds=time.perf_counter() - started,
    )
