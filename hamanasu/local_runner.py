"""The embedded engine's :class:`coordinator.runner.Runner`: runs approved jobs on one machine.

It knows each local node's data folder and state folder (from the local deployment
config of ``hamanasu up``, or a test), passes every node's gate
(:class:`nodes.enforcement.EnforcementPoint`: ``accept`` reserves the job's whole
(ε, δ) before anything runs, every round charges through the ClientApp's gate, and
``release`` returns what was not used), and runs the job with
:func:`hamanasu.training_run.run_training_job` on Flower's simulation engine.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.runner import RoundProgress, RunResult
from federation.errors import bounded_reason
from federation.spec import JobSpec

__all__ = ["EmbeddedRunner", "LocalNode"]

log = logging.getLogger("hamanasu.runner")

# Flower's simulation engine (Ray) is one per process: runs take turns.
_ENGINE = threading.Lock()


@dataclass(frozen=True)
class LocalNode:
    """A node of the local deployment: its name, data folder and state folder."""

    name: str
    data: Path
    state_dir: Path


class EmbeddedRunner:
    """Runs ``train``, ``stats`` and ``glm`` jobs over local nodes on the embedded engine.

    Args:
        nodes: the local nodes by name.
    """

    def __init__(self, nodes: Mapping[str, LocalNode]) -> None:
        self.nodes = dict(nodes)

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        """Run ``job`` on ``nodes``; see :meth:`coordinator.runner.Runner.run`."""
        from nodes.enforcement import EnforcementPoint, JobRefused
        from nodes.sources import NodeSource, read_columns

        unknown = [n for n in nodes if n not in self.nodes]
        if unknown:
            return RunResult("failed", f"node(s) {unknown} are not part of this local deployment")
        points = {n: EnforcementPoint(n, self.nodes[n].state_dir) for n in nodes}
        sources = [NodeSource(n, self.nodes[n].data, self.nodes[n].state_dir) for n in nodes]
        sizes: dict[str, int] = {}
        try:  # a linked job's holders each hold some of its columns: read by the job
            if job.link is None:
                sizes = {s.name: len(read_columns(s.data, job.domain, job.columns()))
                         for s in sources}
        except (FileNotFoundError, KeyError, ValueError) as exc:
            return RunResult("failed", bounded_reason(f"node data: {str(exc).strip(chr(39))}"))
        accepted: list[str] = []
        result = RunResult("failed", "the run did not start")
        try:
            for name, point in points.items():
                try:
                    point.accept(job, job_id, approved=True)
                except JobRefused as exc:
                    result = RunResult("failed", bounded_reason(str(exc)))
                    return result
                accepted.append(name)
            if cancelled.is_set():
                result = RunResult("failed", "cancelled before the run started")
                return result
            with _ENGINE:
                if job.link is not None:
                    result = self._linked(job, job_id, sources, points)
                elif job.kind == "train":
                    result = self._train(job, job_id, sources, sizes, points, on_progress)
                else:
                    result = self._analytics(job, job_id, sources, points, on_progress)
                return result
        finally:
            failed = result.status != "succeeded"
            for name in accepted:
                try:
                    reason = f"job {result.status}: {result.reason}" if failed else "job ended"
                    points[name].release(job_id, reason, failed=failed)
                except Exception:  # noqa: BLE001 - a release failure must not hide the result
                    log.exception("node %s: could not release job %s", name, job_id)

    def _linked(
        self, job: JobSpec, job_id: str, sources: list[Any], points: dict[str, Any]
    ) -> RunResult:
        """Run an accepted linked job: each holder's gate selects rows, then PSI, then MPC."""
        from hamanasu.linked_job import run_linked_job

        with tempfile.TemporaryDirectory() as tmp:
            report = run_linked_job(job, sources, Path(tmp), gates=points, job_id=job_id)
            plot_name = report.get("plot")
            plot = (Path(tmp) / plot_name).read_bytes() if plot_name else None
        ok = report.get("status") == "succeeded"
        dp = report.get("dp") or {}
        eps = {n: float(dp["epsilon_charged_per_node"]) for n in report.get("holders", {})
               } if job.privacy is not None and dp else {}
        return RunResult(
            "succeeded" if ok else "failed",
            bounded_reason(report.get("reason") or f"linked {job.kind} released"),
            report=report,
            epsilon_by_node=eps,
            plot_png=plot,
        )

    def _analytics(
        self,
        job: JobSpec,
        job_id: str,
        sources: list[Any],
        points: dict[str, Any],
        on_progress: Callable[[RoundProgress], None],
    ) -> RunResult:
        """Run a ``stats`` or ``glm`` job; the plot is the rates chart or the forest plot."""
        from hamanasu.analytics_run import run_analytics_job

        with tempfile.TemporaryDirectory() as tmp:
            result = run_analytics_job(
                job, sources, job_id=job_id, out=Path(tmp), show=False, gates=dict(points)
            )
            plot_name = result.get("plot")
            plot = (Path(tmp) / plot_name).read_bytes() if plot_name else None
        rounds = result.get("rounds")
        total = rounds if isinstance(rounds, int) else 1
        on_progress(RoundProgress(round=total, rounds_total=total, metrics={}))
        eps = {}
        if job.privacy is not None and result.get("dp"):
            eps = {
                n: float(result["dp"]["epsilon_charged_per_node"]) for n in result.get("nodes", [])
            }
        return RunResult(
            "succeeded" if result["status"] == "succeeded" else "failed",
            result.get("reason") or f"{job.kind} released",
            report=result,
            epsilon_by_node=eps,
            plot_png=plot,
        )

    def _train(
        self,
        job: JobSpec,
        job_id: str,
        sources: list[Any],
        sizes: dict[str, int],
        points: dict[str, Any],
        on_progress: Callable[[RoundProgress], None],
    ) -> RunResult:
        from hamanasu.plots import plot_training
        from hamanasu.training_run import run_training_job

        def on_round(record: Any) -> None:
            on_progress(
                RoundProgress(
                    round=min(int(record.round), job.rounds),
                    rounds_total=job.rounds,
                    metrics=dict(record.metrics),
                )
            )

        run = run_training_job(
            job,
            sources,
            job_id=job_id,
            max_records=max(sizes.values()),
            gates=dict(points),
            on_round=on_round,
        )
        run.node_sizes = sizes
        report = run.report()
        model = (
            None
            if run.parameters is None
            else {
                "model": job.model,
                "features": job.features,
                "label": job.label,
                "parameters": [p.tolist() for p in run.parameters],
            }
        )
        plot = None
        if report["rounds"]:
            with tempfile.TemporaryDirectory() as tmp:
                path = plot_training(report, Path(tmp) / "training.png")
                plot = path.read_bytes()
        eps = (report.get("privacy") or {}).get("epsilon_spent_by_node") or {}
        return RunResult(
            "succeeded" if run.outcome.status == "succeeded" else "failed",
            run.outcome.reason or f"{job.rounds} round(s) done",
            report=report,
            model=model,
            epsilon_by_node={k: float(v) for k, v in eps.items()},
            plot_png=plot,
        )
