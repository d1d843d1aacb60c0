"""The ServerApp for Flower's deployment engine (``coordinator.flower_server:app``).

The SuperLink starts it once per run in a fresh ``flwr-serverapp`` process. Everything
about the job comes from ``context.run_config``, set by the coordinator when it submits
the run (:mod:`coordinator.flower_control`):

* ``job-spec``: the job spec as JSON; ``job-id``: the platform's job id;
* ``n-nodes``: nodes taking part; ``node-ids``: their Flower node ids (comma separated;
  nodes outside this set are never sampled);
* ``max-records``: an upper bound of any node's training set (sizes SecAgg+'s
  ``max_weight``; the spec's ``secure_aggregation.max_weight`` wins when set);
* ``results-file``: where the report JSON is written (Flower discards the server context,
  so this file, in the platform's store, is the run's result); ``progress-file``: JSON
  lines, one per round, as rounds finish; ``model-file``: the final parameters (``.npz``);
* ``start-timeout``: seconds to wait for the job's nodes to come online;
* ``declared-ranges``: the data model's public (low, high) per numeric column, as JSON
  (statistics and GLM jobs scale by them); ``min-cell-count``: the highest cell floor of
  the job's nodes' policies (statistics releases suppress below it). With ``n-nodes``
  and ``max-records`` these are the plan's public inputs
  (:meth:`federation.plans.PlanInputs.from_run_config`), read alike by every node.

The job's plan (:func:`federation.plans.plan_for`, built from the run config's public
inputs) holds its SecAgg+ settings, initial broadcast, server step and result; this app
drives its rounds through :func:`coordinator.server_app.build_training_server_app` (our
round driver with SecAgg+ retries) for a :class:`~federation.plans.TrainPlan`, and
:func:`coordinator.server_app.build_sum_server_app` for a
:class:`~federation.plans.SumPlan` (``stats``, ``glm``). A run below the
job's minimum of live nodes ends ``failed`` with that reason instead of waiting for
nodes that will not come back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.serverapp import ServerApp

if TYPE_CHECKING:
    from flwr.app import Context, Message
    from flwr.serverapp import Grid

    from federation.plans import SumPlan
    from federation.spec import JobSpec

__all__ = ["RUN_CONFIG_DEFAULTS", "app", "plan_from_run_config"]

log = logging.getLogger("hamanasu.coordinator")

#: Every run_config key the app reads, with its default (the app's ``[tool.flwr.app.config]``).
RUN_CONFIG_DEFAULTS: dict[str, str | int | float] = {
    "job-spec": "",
    "job-id": "",
    "n-nodes": 0,
    "node-ids": "",
    "max-records": 0,
    "results-file": "",
    "progress-file": "",
    "model-file": "",
    "start-timeout": 120.0,
    "poll-interval": 0.05,
    "declared-ranges": "",
    "min-cell-count": 0,
}


class _JobGrid:
    """The run's grid restricted to the job's nodes, polling replies every ``poll`` seconds.

    Flower's HTTP grid waits 3 s between polls for replies; SecAgg+ makes four exchanges a
    round, so a short interval matters on a LAN (a poll is one small request to the
    SuperLink on the same machine). Everything else is delegated.
    """

    def __init__(self, grid: Grid, node_ids: set[int] | None, poll: float) -> None:
        self._grid, self._ids, self._poll = grid, node_ids, poll

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> Iterable[int]:
        ids = list(self._grid.get_node_ids())
        return ids if self._ids is None else [i for i in ids if i in self._ids]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        from federation.deploy_trace import trace

        trace("server.push.start")
        ids = list(self._grid.push_messages(messages))
        trace("server.push.end", n=len(ids))
        pending, replies = set(ids), []
        end = None if timeout is None else time.monotonic() + timeout
        while pending and (end is None or time.monotonic() < end):
            got = list(self._grid.pull_messages(list(pending)))
            for msg in got:
                pending.discard(msg.metadata.reply_to_message_id)
            replies.extend(got)
            if pending:
                time.sleep(self._poll)
        trace("server.replies", n=len(replies))
        return replies


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
    os.replace(tmp, path)


class _Reporter:
    """Writes progress lines and, exactly once, the run's report."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.results = Path(str(cfg["results-file"])) if cfg.get("results-file") else None
        self.progress = Path(str(cfg["progress-file"])) if cfg.get("progress-file") else None
        self.model = Path(str(cfg["model-file"])) if cfg.get("model-file") else None
        self.started = time.time()
        self._lock = threading.Lock()
        self._done = False

    def round(self, record: Any) -> None:
        from federation.deploy_trace import trace

        trace("server.round", round=record.round)
        if self.progress is None:
            return
        line = {
            "event": "round",
            "round": record.round,
            "model_version": record.model_version,
            "metrics": record.metrics,
            "nodes": record.nodes,
            "epsilon_by_node": record.epsilon_by_node,
            "n_train_total": record.n_train_total,
            "elapsed_s": round(time.time() - self.started, 3),
        }
        self.progress.parent.mkdir(parents=True, exist_ok=True)
        with self.progress.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=float) + "\n")

    def finish(self, report: dict[str, Any], parameters: Any = None) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
        if self.model is not None and parameters is not None:
            import numpy as np

            self.model.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self.model, *[np.asarray(p) for p in parameters])
            report["model_file"] = str(self.model)
        if self.results is not None:
            _write_json(self.results, report)
        return True


def _wait_for_nodes(grid: _JobGrid, expected: set[int] | None, want: int, timeout: float) -> int:
    """Wait until ``want`` of the job's nodes are online (or ``timeout``); return how many are."""
    end = time.monotonic() + timeout
    while True:
        online = len(list(grid.get_node_ids()))
        if online >= want or time.monotonic() >= end:
            return online
        time.sleep(0.5)


def _watch_min_nodes(
    grid: _JobGrid,
    min_nodes: int,
    grace: float,
    reporter: _Reporter,
    base: dict[str, Any],
    stop: threading.Event,
) -> None:
    """Fail the run when fewer than ``min_nodes`` nodes stay online for ``grace`` seconds.

    Flower's client manager would otherwise wait a day for nodes that died.
    """
    below_since: float | None = None
    while not stop.wait(1.0):
        try:
            online = len(list(grid.get_node_ids()))
        except Exception:  # noqa: BLE001 - the SuperLink is going away; main will end
            continue
        if online >= min_nodes:
            below_since = None
            continue
        below_since = below_since or time.monotonic()
        if time.monotonic() - below_since >= grace:
            reason = f"{online} node(s) online, the job needs at least {min_nodes}"
            log.error("run failed: %s", reason)
            if reporter.finish(
                {
                    **base,
                    "status": "failed",
                    "reason": reason,
                    "wall_seconds": round(time.time() - reporter.started, 2),
                }
            ):
                os._exit(1)


def plan_from_run_config(spec: JobSpec, run_config: dict[str, Any], n_nodes: int) -> Any:
    """Return the job's plan from the run's public inputs, for ``n_nodes`` taking part.

    The nodes build theirs from the same run config, so both sides agree on scales.

    Raises:
        ValueError: a malformed run config, or inputs the plan refuses.
    """
    from federation.plans import PlanInputs, plan_for

    return plan_for(spec, replace(PlanInputs.from_run_config(run_config), n_nodes=n_nodes))


def _run(grid: Grid, context: Context) -> None:
    import numpy as np

    from coordinator.server_app import RunOutcome, build_training_server_app
    from federation.plans import SumPlan, TrainPlan
    from federation.spec import parse_job_spec
    from federation.training_round import TrainingRecorder

    cfg = {**RUN_CONFIG_DEFAULTS, **dict(context.run_config)}
    if float(cfg["poll-interval"]) < 1.0:
        from federation.flower_patches import fast_object_pulls

        fast_object_pulls()
    reporter = _Reporter(cfg)
    job_id = str(cfg["job-id"])
    base: dict[str, Any] = {"job_id": job_id, "engine": "deployment", "run_id": context.run_id}
    outcome, recorder, secagg, parameters = (
        RunOutcome(),
        TrainingRecorder(on_round=reporter.round),
        None,
        None,
    )
    stop = threading.Event()
    try:
        spec = parse_job_spec(json.loads(str(cfg["job-spec"])))
        base.update(
            kind=spec.kind,
            model=spec.model,
            features=spec.features,
            label=spec.label,
            rounds_planned=spec.rounds,
            min_nodes=spec.min_nodes,
        )
        from federation.flower_patches import bound_object_pulls

        # a reply whose content never fully arrives (its node died mid-upload) must not
        # stall the round past its stage timeout
        bound_object_pulls(
            spec.secure_aggregation.timeout if spec.secure_aggregation.enabled else 60.0
        )
        ids = {int(x) for x in str(cfg["node-ids"]).split(",") if x.strip()} or None
        n_nodes = int(cfg["n-nodes"]) or (len(ids) if ids else 0)
        if n_nodes < spec.min_nodes:
            raise ValueError(f"n-nodes: {n_nodes} node(s) given, the job needs {spec.min_nodes}")
        job_grid = _JobGrid(grid, ids, float(cfg["poll-interval"]))
        online = _wait_for_nodes(job_grid, ids, n_nodes, float(cfg["start-timeout"]))
        if online < spec.min_nodes:
            raise RuntimeError(
                f"{online} of {n_nodes} node(s) came online, the job needs {spec.min_nodes}"
            )
        plan = plan_from_run_config(spec, cfg, n_nodes)
        if isinstance(plan, SumPlan):
            _run_sum(job_grid, context, plan, online, reporter, base)
            return
        if not isinstance(plan, TrainPlan):
            raise ValueError(f"kind: {spec.kind!r} is not served by this ServerApp")
        secagg = plan.secagg
        initial = plan.initial_parameters()
        sa = spec.secure_aggregation
        grace = (sa.timeout if sa.enabled else 30.0) + 15.0
        threading.Thread(
            target=_watch_min_nodes,
            daemon=True,
            args=(job_grid, spec.min_nodes, grace, reporter, base, stop),
        ).start()
        inner = build_training_server_app(
            initial=initial,
            # Sample every live node but wait only for the minimum: a dead node must
            # not stall the rounds that follow.
            n_nodes=spec.min_nodes,
            rounds=plan.rounds,
            min_nodes=spec.min_nodes,
            secagg=secagg,
            fit_config={"job_id": job_id},
            recorder=recorder,
            outcome=outcome,
            evaluation=plan.evaluation,
        )
        inner(job_grid, context)  # type: ignore[arg-type]
        parameters = recorder.final_parameters
        base["evaluation"] = plan.evaluation_summary(recorder.rounds)
        if (unfinished := plan.unfinished_reason(outcome.status)) is not None:
            outcome.status, outcome.reason = "failed", unfinished
    except Exception as exc:  # noqa: BLE001 - the report carries the reason
        outcome.status, outcome.reason = "failed", str(exc) or type(exc).__name__
        log.error("run failed: %s", outcome.reason)
    finally:
        stop.set()
    last_eps = TrainPlan.epsilon_by_node(recorder.rounds)
    report = {
        **base,
        "status": outcome.status,
        "reason": outcome.reason,
        "secure_aggregation": secagg is not None,
        "secagg_settings": None if secagg is None else secagg.summary(outcome.retried_rounds),
        "epsilon_spent_by_node": last_eps,
        "rows_dropped_by_node": TrainPlan.rows_dropped_by_node(recorder.rounds),
        "rounds": [r.as_dict() for r in recorder.rounds],
        "wall_seconds": round(time.time() - reporter.started, 2),
    }
    reporter.finish(report, [np.asarray(p) for p in parameters] if parameters is not None else None)


def _run_sum(
    grid: _JobGrid,
    context: Context,
    plan: SumPlan,
    online: int,
    reporter: _Reporter,
    base: dict[str, Any],
) -> None:
    """Run a secure-sum job (statistics, GLM) by its plan and write its report.

    Unlike training, every round waits for all ``online`` nodes to be sampled (as the
    embedded run does): a sum over fewer nodes is a different statistic, not a smaller
    sample.
    """
    from coordinator.server_app import RunOutcome, build_sum_server_app
    from federation.secure_sum import SumRecorder

    outcome, recorder = RunOutcome(), SumRecorder()
    report: dict[str, Any] = {"job_id": base["job_id"], "kind": plan.spec.kind}
    try:
        inner = build_sum_server_app(
            initial=plan.initial,
            n_nodes=min(online, plan.inputs.n_nodes),
            max_rounds=plan.max_rounds,
            min_nodes=plan.spec.min_nodes,
            secagg=plan.secagg,
            fit_config={"job_id": base["job_id"]},
            step=plan.step,
            recorder=recorder,
            outcome=outcome,
        )
        inner(grid, context)  # type: ignore[arg-type]
        report.update(plan.report(outcome.status, outcome.reason, recorder))
        report["nodes"] = recorder.nodes[-1] if recorder.nodes else []
    except Exception as exc:  # noqa: BLE001 - the report carries the reason
        report.update(status="failed", reason=str(exc) or type(exc).__name__)
        log.error("run failed: %s", report["reason"])
    report.update(
        engine="deployment",
        run_id=context.run_id,
        wall_seconds=round(time.time() - reporter.started, 2),
    )
    reporter.finish(report)


#: The ServerApp the SuperLink runs (``serverapp = "coordinator.flower_server:app"``).
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the job in ``context.run_config`` and write its report where the coordinator said."""
    _run(grid, context)
