"""The node's ClientApp for statistics and GLM jobs: gate, then one scaled vector per round.

Each round passes the node's gate exactly as training does (policy, consent now,
minimum cohort, usage entry), then computes the job's local vector at the broadcast
parameters, scaled by a public scale and range-checked, and sends it with weight 1
through ``secaggplus_mod``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from federation.privacy_unit import cap_for_job
from nodes.client_app import OpenGate, RoundGate, RoundUse
from nodes.sources import NodeSource, read_job_columns

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.clientapp import ClientApp

    from federation.plans import SumPlan

__all__ = ["build_sum_client_app"]


def build_sum_client_app(
    plan: SumPlan,
    job_id: str,
    nodes: list[NodeSource],
    gates: dict[str, RoundGate] | None = None,
) -> ClientApp:
    """Build the ClientApp of a secure-sum job (statistics, GLM) from its plan.

    Each round reads the job's columns, passes the node's gate, commits what the plan's
    :attr:`~federation.plans.SumPlan.round_charge` says the round charges (nothing when
    None), then sends the plan's local vector at the broadcast parameters.

    Returns:
        The :class:`flwr.clientapp.ClientApp`.
    """
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    by_name = {n.name: n for n in nodes}
    gate_map = gates or {}
    job, mechanism = plan.spec, plan.round_charge

    class _Client(NumPyClient):
        def __init__(self, node: NodeSource) -> None:
            self.node = node
            self.gate = gate_map.get(node.name, OpenGate())

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            round_no = int(config["round"])
            frame, complete = read_job_columns(
                self.node.data, job.domain, job.columns(), complete_case=job.complete_case
            )
            frame = self.gate.select(job, job_id, round_no, frame)
            frame, dropped = cap_for_job(frame, job)  # the rows each resident may give
            eps, mech = mechanism(round_no) if mechanism else (0.0, {"type": "none"})
            subjects = frame["subject"].astype(str).tolist() if "subject" in frame.columns else []
            delta = job.privacy.delta if job.privacy and mechanism else 0.0
            self.gate.commit(job, RoundUse(job_id, round_no, "compute", subjects, eps, delta, mech))
            vector = plan.local(frame, np.asarray(parameters[0], dtype=np.float64), config)
            metrics: dict[str, Any] = {"node": self.node.name}
            if dropped is not None:
                metrics["rows_dropped"] = dropped
            if complete is not None:  # counts only, never data (small ones as -1)
                metrics.update(complete.metrics())
            return [vector], 1, metrics

    def client_fn(context: Context) -> Any:
        name = context.node_config.get("node-name")
        node = by_name[str(name)] if name else nodes[int(context.node_config["partition-id"])]
        return _Client(node).to_client()

    secure = plan.secagg is not None
    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secure else None)
