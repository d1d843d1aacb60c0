"""The node's ClientApp for Flower's deployment engine (``nodes.flower_client:app``).

A SuperNode runs this module for every message of a run. The node's own settings come
from ``context.node_config`` (set when the SuperNode starts, never by the coordinator):

* ``node-name``: the node's name;
* ``data-dir``: the node's data folder (tables of the common data model);
* ``state-dir``: the node's state folder (policy, consents, ledger, budget); without one
  the node has no gate and refuses every job.

The job comes from ``context.run_config`` (set by the coordinator per run): ``job-spec``
(the spec as JSON) and ``job-id``. Every round passes the node's
:class:`~nodes.enforcement.EnforcementPoint` before a record is read, exactly as in an
embedded run. The job's plan (:func:`plan_from_run_config`, from the same public run
settings the ServerApp reads) gives the node half: a training plan runs through
:func:`nodes.client_app.build_training_client_app`, a secure-sum plan (``stats``,
``glm``) through :func:`nodes.sum_client_app.build_sum_client_app`.

Only flwr is imported at module level: pandas, torch and opacus are imported when a
message arrives, so loading the app stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.clientapp import ClientApp

if TYPE_CHECKING:
    from flwr.app import Context, Message

    from federation.plans import SumPlan, TrainPlan
    from federation.spec import JobSpec

__all__ = [
    "NodeClientApp",
    "app",
    "job_from_run_config",
    "node_from_node_config",
    "plan_from_run_config",
]


def node_from_node_config(node_config: dict[str, Any]) -> tuple[str, Path, Path | None]:
    """Return (name, data folder, state folder or None) from a SuperNode's node config.

    Raises:
        ValueError: ``node-name`` or ``data-dir`` is missing.
    """
    name = str(node_config.get("node-name") or "")
    data = str(node_config.get("data-dir") or "")
    if not name or not data:
        raise ValueError("node_config: the SuperNode needs node-name and data-dir")
    state = str(node_config.get("state-dir") or "")
    return name, Path(data), Path(state) if state else None


def job_from_run_config(run_config: dict[str, Any]) -> tuple[Any, str]:
    """Return (JobSpec, job id) from a run's config.

    Raises:
        ValueError: the spec or the job id is missing or invalid.
    """
    from federation.spec import parse_job_spec

    raw, job_id = str(run_config.get("job-spec") or ""), str(run_config.get("job-id") or "")
    if not raw or not job_id:
        raise ValueError("run_config: the run carries no job-spec or job-id")
    import json

    return parse_job_spec(json.loads(raw)), job_id


class NodeClientApp(ClientApp):
    """A ClientApp that builds the node's job ClientApp (by the job's kind) per message."""

    def __init__(self) -> None:
        super().__init__(client_fn=None, mods=None)

    def __call__(self, message: Message, context: Context) -> Message:
        """Run ``message`` at this node through its gate and return the reply.

        Raises:
            ValueError: the node or the run is misconfigured (the reply carries the reason).
            nodes.enforcement.JobRefused: the node's gate refused the round.
        """
        from federation.deploy_trace import trace, tracing
        from federation.plans import TrainPlan
        from nodes.client_app import build_training_client_app
        from nodes.sources import NodeSource
        from nodes.sum_client_app import build_sum_client_app

        trace("app.call", stage=_stage(message))

        name, data, state = node_from_node_config(dict(context.node_config))
        job, job_id = job_from_run_config(dict(context.run_config))
        plan = plan_from_run_config(job, dict(context.run_config))
        if job.nodes and name not in job.nodes:
            raise ValueError(f"node {name} is not one of the job's nodes")
        if state is None:
            raise ValueError(f"node {name} has no state-dir: it cannot enforce its policy")
        from nodes.enforcement import EnforcementPoint

        gate: Any = EnforcementPoint(name, state)
        if tracing():
            gate = _TracedGate(gate)
        node = NodeSource(name, data, state)
        if isinstance(plan, TrainPlan):
            inner = build_training_client_app(plan, job_id, [node], {name: gate})
        else:
            inner = build_sum_client_app(plan, job_id, [node], {name: gate})
        trace("app.built")
        reply = inner(message, context)
        trace("app.done", stage=_stage(message))
        return reply


def plan_from_run_config(job: JobSpec, run_config: dict[str, Any]) -> TrainPlan | SumPlan:
    """Return the job's plan from the run's public settings, the same the ServerApp uses.

    The run config carries :class:`federation.plans.PlanInputs` (``n-nodes``,
    ``max-records``, ``declared-ranges``; without ranges, the node's own data model's).

    Raises:
        ValueError: a kind this app does not serve, or inputs the plan refuses (a
            secure-sum job without the number of nodes or the record bound).
    """
    from federation.plans import PlanInputs, SumPlan, TrainPlan, plan_for

    plan = plan_for(job, PlanInputs.from_run_config(run_config))
    if not isinstance(plan, TrainPlan | SumPlan):
        raise ValueError(f"job kind {job.kind!r} is not served by this node's deployment app")
    return plan


class _TracedGate:
    """An enforcement point whose select and commit are timed (tracing only)."""

    def __init__(self, gate: Any) -> None:
        self._gate = gate

    def select(self, *args: Any) -> Any:
        from federation.deploy_trace import trace

        trace("gate.select.start")
        try:
            return self._gate.select(*args)
        finally:
            trace("gate.select.end")

    def commit(self, *args: Any) -> Any:
        from federation.deploy_trace import trace

        trace("gate.commit.start")
        try:
            return self._gate.commit(*args)
        finally:
            trace("gate.commit.end")


def _stage(message: Message) -> str:
    """Return the SecAgg+ stage a message carries, else its message type (for traces)."""
    try:
        return str(message.content.config_records["secaggplus_configs"]["stage"])
    except (KeyError, AttributeError, TypeError):
        return str(message.metadata.message_type)


#: The ClientApp a SuperNode loads (``clientapp = "nodes.flower_client:app"``).
app = NodeClientApp()
