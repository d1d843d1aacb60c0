"""The coordinator's :class:`~coordinator.runner.Runner` for Flower's deployment engine.

A job runs as one Flower run on the SuperLink beside the coordinator, over the SuperNodes
of the nodes that approved it. The runner submits a run of the Flower app it was given
through the Control API (:mod:`coordinator.flower_control`), never through a CLI; the
app's ServerApp (:mod:`coordinator.flower_server`) writes a progress line per round and
the final report into the job's folder of the platform's store, which the runner follows
until Flower reports the run finished.

Nodes are known to the SuperLink by the name they were registered under
(:meth:`FlowerControl.register_node`); a node not registered there cannot take part.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from coordinator.flower_control import FlowerApp, FlowerControl, FlowerControlError
from coordinator.runner import RoundProgress, RunCancelled, RunResult
from federation.plans import PlanInputs
from federation.spec import JobSpec

__all__ = ["DeploymentRunner"]

log = logging.getLogger("hamanasu.coordinator")


class DeploymentRunner:
    """Runs approved jobs on a SuperLink and its SuperNodes.

    Args:
        superlink: the SuperLink's ``host:port`` (Control API, TLS).
        ca_cert: the CA certificate that signed the SuperLink's certificate.
        app: the Flower app each job runs as (its ServerApp writes the files below; the
            coordinator submits it with the job's run config).
        results_dir: the store folder; job ``J`` writes ``J/report.json``,
            ``J/progress.jsonl`` and ``J/model.npz`` there. The ServerApp must be able to
            write it (it runs beside the SuperLink).
        max_records: an upper bound of any node's training-set size (SecAgg+'s
            ``max_weight``) when the spec does not set ``secure_aggregation.max_weight``;
            an int, or a callable ``(job, nodes) -> int``.
        declared_ranges: ``domain -> {column: (low, high)}``, the common data model's
            public ranges (statistics and GLM jobs scale by them; the coordinator does not
            import the nodes' data model, so whoever wires the runner passes it). Without
            it, jobs must carry their own bounds (``stats.bounds``, ``glm.bounds``).
        min_cell_count: the cell floor of statistics releases beyond the job's own (the
            highest of the nodes' policies); an int, or a callable ``(job, nodes) -> int``.
        start_timeout: seconds to wait for the job's SuperNodes to be online.
        run_timeout: seconds a run may take before it is stopped (None: no limit).
        poll: seconds between status checks.
    """

    def __init__(
        self,
        superlink: str,
        ca_cert: Path,
        results_dir: Path,
        *,
        app: FlowerApp,
        max_records: int | Callable[[JobSpec, Sequence[str]], int] = 0,
        declared_ranges: Callable[[str], Mapping[str, tuple[float, float]]] | None = None,
        min_cell_count: int | Callable[[JobSpec, Sequence[str]], int] = 0,
        start_timeout: float = 120.0,
        run_timeout: float | None = None,
        poll: float = 0.5,
    ) -> None:
        self.superlink, self.ca_cert, self.results_dir = superlink, Path(ca_cert), Path(results_dir)
        self.app = app
        self.max_records = max_records
        self.declared_ranges, self.min_cell_count = declared_ranges, min_cell_count
        self.start_timeout, self.run_timeout, self.poll = start_timeout, run_timeout, poll
        self.last_run_id: int | None = None

    def _node_ids(self, ctl: FlowerControl, nodes: Sequence[str], min_nodes: int) -> dict[str, int]:
        """Map job nodes to Flower node ids, waiting until all (or the minimum) are online.

        Raises:
            RuntimeError: a node is unregistered, or too few come online in time.
        """
        end = time.monotonic() + self.start_timeout
        while True:
            known = {n.name: n for n in ctl.nodes() if n.status != "unregistered"}
            missing = [n for n in nodes if n not in known]
            if missing:
                raise RuntimeError(f"node(s) {missing} are not registered with the SuperLink")
            online = [n for n in nodes if known[n].online]
            if len(online) == len(nodes):
                return {n: known[n].node_id for n in nodes}
            if time.monotonic() >= end:
                if len(online) >= min_nodes:
                    return {n: known[n].node_id for n in online}
                raise RuntimeError(
                    f"{len(online)} of {len(nodes)} node(s) online after {self.start_timeout:g} s "
                    f"(offline: {sorted(set(nodes) - set(online))}); the job needs {min_nodes}"
                )
            time.sleep(min(self.poll, 1.0))

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        """Run ``job`` on ``nodes`` as a Flower run and return its result (see :class:`Runner`)."""
        folder = self.results_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        report_path, progress_path, model_path = (
            folder / "report.json",
            folder / "progress.jsonl",
            folder / "model.npz",
        )
        for path in (report_path, progress_path, model_path):
            path.unlink(missing_ok=True)
        try:
            with FlowerControl(self.superlink, self.ca_cert) as ctl:
                ids = self._node_ids(ctl, list(nodes), job.min_nodes)
                bound = (
                    self.max_records(job, list(ids))
                    if callable(self.max_records)
                    else self.max_records
                )
                floor = (
                    self.min_cell_count(job, list(ids))
                    if callable(self.min_cell_count)
                    else self.min_cell_count
                )
                inputs = PlanInputs(
                    n_nodes=len(ids),
                    max_records=int(bound),
                    declared=(
                        self.declared_ranges(job.domain)
                        if self.declared_ranges is not None
                        else None
                    ),
                    min_cell_count=int(floor),
                )
                run_id = ctl.start_run(
                    self.app,
                    {
                        "job-spec": json.dumps(job.model_dump(mode="json")),
                        "job-id": job_id,
                        "node-ids": ",".join(str(i) for i in ids.values()),
                        "results-file": str(report_path),
                        "progress-file": str(progress_path),
                        "model-file": str(model_path),
                        "start-timeout": float(self.start_timeout),
                        **inputs.to_run_config(),
                    }
                )
                self.last_run_id = run_id
                log.info("job %s: Flower run %d on %s", job_id, run_id, sorted(ids))
                info = self._follow(ctl, run_id, job, progress_path, on_progress, cancelled)
        except RunCancelled:
            raise
        except (FlowerControlError, RuntimeError, TimeoutError) as exc:
            return RunResult("failed", str(exc))
        if job.kind != "train":
            return self._sum_result(job, report_path, info, list(ids), on_progress)
        return self._result(job, report_path, model_path, info)

    def _follow(
        self,
        ctl: FlowerControl,
        run_id: int,
        job: JobSpec,
        progress: Path,
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> Any:
        """Poll the run until it finishes, forwarding each finished round to ``on_progress``."""
        seen = 0
        end = None if self.run_timeout is None else time.monotonic() + self.run_timeout
        while True:
            info = ctl.run(run_id)
            lines = progress.read_text(encoding="utf-8").splitlines() if progress.exists() else []
            for line in lines[seen:]:
                if not line.endswith("}"):
                    break  # a line being written
                seen += 1
                rec = json.loads(line)
                try:
                    on_progress(
                        RoundProgress(
                            round=min(int(rec["round"]), job.rounds),
                            rounds_total=job.rounds,
                            metrics=dict(rec.get("metrics") or {}),
                        )
                    )
                except RunCancelled:
                    ctl.stop_run(run_id)
                    raise
            if info.finished:
                return info
            if cancelled.is_set():
                ctl.stop_run(run_id)
                raise RunCancelled(f"Flower run {run_id} stopped")
            if end is not None and time.monotonic() >= end:
                ctl.stop_run(run_id)
                raise TimeoutError(f"Flower run {run_id} stopped after {self.run_timeout:g} s")
            time.sleep(self.poll)

    def _sum_result(
        self,
        job: JobSpec,
        report_path: Path,
        info: Any,
        nodes: list[str],
        on_progress: Callable[[RoundProgress], None],
    ) -> RunResult:
        """Turn a ``stats`` / ``glm`` report into a :class:`RunResult` (as the embedded one).

        Progress is reported once, at the end, with the rounds the job took; the report's
        ``nodes`` are the nodes' names. No plot is drawn here (the coordinator does not
        import the plotting of the ``hamanasu`` CLI).
        """
        if not report_path.exists():
            why = info.details or info.sub_status or "no report"
            return RunResult(
                "failed",
                f"Flower run {info.run_id} ended {info.sub_status or 'without a report'}: {why}",
            )
        report = json.loads(report_path.read_text(encoding="utf-8"))
        report["nodes"] = nodes
        rounds = report.get("rounds")
        total = rounds if isinstance(rounds, int) else 1
        on_progress(RoundProgress(round=total, rounds_total=total, metrics={}))
        eps: dict[str, float] = {}
        if job.privacy is not None and report.get("dp"):
            eps = {n: float(report["dp"]["epsilon_charged_per_node"]) for n in nodes}
        status: Literal["succeeded", "failed"] = (
            "succeeded" if report.get("status") == "succeeded" else "failed"
        )
        return RunResult(
            status,
            report.get("reason") or f"{job.kind} released",
            report=report,
            epsilon_by_node=eps,
        )

    def _result(self, job: JobSpec, report_path: Path, model_path: Path, info: Any) -> RunResult:
        """Turn the ServerApp's report (or its absence) into a :class:`RunResult`."""
        if not report_path.exists():
            why = info.details or info.sub_status or "no report"
            return RunResult(
                "failed",
                f"Flower run {info.run_id} ended {info.sub_status or 'without a report'}: {why}",
            )
        report = json.loads(report_path.read_text(encoding="utf-8"))
        model = None
        if model_path.exists() and report.get("status") == "succeeded":
            import numpy as np

            with np.load(model_path) as arrays:
                params = [arrays[f"arr_{i}"].tolist() for i in range(len(arrays.files))]
            model = {
                "model": job.model,
                "features": job.features,
                "label": job.label,
                "parameters": params,
            }
        eps = {str(k): float(v) for k, v in (report.get("epsilon_spent_by_node") or {}).items()}
        status: Literal["succeeded", "failed"] = (
            "succeeded" if report.get("status") == "succeeded" else "failed"
        )
        reason = report.get("reason") or f"{job.rounds} round(s) done"
        return RunResult(status, reason, report=report, model=model, epsilon_by_node=eps)
