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
embedded run: ``train`` jobs through :func:`nodes.client_app.build_training_client_app`,
``stats`` and ``glm`` jobs through :func:`nodes.sum_client_app.build_sum_client_app`
with the node half of :mod:`federation.analytics.sum_jobs`.

Only flwr is imported at module level: pandas, torch and opacus are imported when a
message arrives, so loading the app stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.clientapp import ClientApp

from federation.cdm import declared_ranges

if TYPE_CHECKING:
    from flwr.app import Context, Message

__all__ = [
    "NodeClientApp",
    "app",
    "job_from_run_config",
    "node_from_node_config",
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
        from nodes.client_app import build_training_client_app
        from nodes.sources import NodeSource

        trace("app.call", stage=_stage(message))

        name, data, state = node_from_node_config(dict(context.node_config))
        job, job_id = job_from_run_config(dict(context.run_config))
        if job.kind not in ("train", "stats", "glm"):
            raise ValueError(f"job kind {job.kind!r} is not served by this node's deployment app")
        if job.nodes and name not in job.nodes:
            raise ValueError(f"node {name} is not one of the job's nodes")
        if state is None:
            raise ValueError(f"node {name} has no state-dir: it cannot enforce its policy")
        from nodes.enforcement import EnforcementPoint

        gate: Any = EnforcementPoint(name, state)
        if tracing():
            gate = _TracedGate(gate)
        if job.kind == "train":
            inner = build_training_client_app(
                job,
                job_id,
                [NodeSource(name, data, state)],
                {name: gate},
                secure_aggregation=job.secure_aggregation.enabled,
            )
        else:
            inner = _sum_client_app(job, job_id, NodeSource(name, data, state), gate, context)
        trace("app.built")
        reply = inner(message, context)
        trace("app.done", stage=_stage(message))
        return reply


def _sum_client_app(job: Any, job_id: str, node: Any, gate: Any, context: Context) -> Any:
    """Build the ClientApp of a ``stats`` or ``glm`` job from the run's public settings.

    The scales come from the run config (``n-nodes``, ``max-records`` and the data
    model's ``declared-ranges``, the same values the ServerApp uses; without ranges, the
    node's own data model's), exactly as :mod:`federation.analytics.sum_jobs` builds them.

    Raises:
        ValueError: the run config lacks the number of nodes or the record bound.
    """
    import json

    from federation.analytics.sum_jobs import StatsPlan, sum_plan
    from nodes.sum_client_app import build_sum_client_app

    cfg = dict(context.run_config)
    n_nodes, max_records = int(cfg.get("n-nodes") or 0), int(cfg.get("max-records") or 0)
    if n_nodes < 1 or max_records < 1:
        raise ValueError("run_config: a secure-sum job needs n-nodes and max-records")
    raw = str(cfg.get("declared-ranges") or "")
    declared = (
        {str(k): (float(v[0]), float(v[1])) for k, v in json.loads(raw).items()}
        if raw
        else declared_ranges(job.domain)
    )
    plan = sum_plan(job, n_nodes, max_records, declared)
    charges = isinstance(plan, StatsPlan) and plan.dp is not None
    return build_sum_client_app(
        plan.spec,
        job_id,
        [node],
        plan.local,
        {node.name: gate},
        secure_aggregation=plan.secagg is not None,
        mechanism=plan.mechanism if charges else None,
    )


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

    def commit(self, *args: Any) -> None:
        from federation.deploy_trace import trace

        trace("gate.commit.start")
        try:
            self._gate.commit(*args)
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
