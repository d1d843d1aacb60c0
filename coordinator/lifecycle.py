"""The job lifecycle: submission, decisions, runs in worker threads, cancellation, recovery.

submitted → awaiting_approval → approved → running (round k of N) → succeeded / failed /
cancelled. The store persists each step with its time and reason; this module drives
the steps that need work: it validates submissions, starts approved jobs on the
:class:`~coordinator.runner.Runner` in a thread pool, records their rounds and
results, and on start-up fails the jobs a dead coordinator left running.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from coordinator.errors import InvalidSpec
from coordinator.requester import vouch
from coordinator.runner import RoundProgress, RunCancelled, Runner, RunResult
from coordinator.schemas import PrincipalPublic
from coordinator.store import Store
from federation.api_models import ApprovalPublic, DecisionCreate, JobPublic
from federation.errors import JobSpecError, bounded_reason
from federation.spec import parse_job_spec

__all__ = ["Lifecycle"]

log = logging.getLogger("hamanasu.coordinator")


class Lifecycle:
    """Drives jobs through their states.

    Args:
        store: the coordinator's store.
        runner: the federation engine's runner; None keeps approved jobs waiting (a
            coordinator without an engine, e.g. for API tests).
        max_concurrent_runs: runs executed at the same time.
        approval_grace: seconds a job with enough approvals waits for the targeted nodes
            that have not decided yet (offline node services) before it runs without them.
    """

    def __init__(
        self,
        store: Store,
        runner: Runner | None,
        max_concurrent_runs: int = 1,
        approval_grace: float = 30.0,
    ) -> None:
        self.store = store
        self.runner = runner
        self.approval_grace = approval_grace
        self._timers: dict[str, threading.Timer] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=max_concurrent_runs, thread_name_prefix="hamanasu-run"
        )
        self._cancel: dict[str, threading.Event] = {}
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    # -- start and stop ------------------------------------------------------------------
    def recover(self) -> None:
        """Fail the jobs left running by a dead coordinator; run the approved ones again."""
        for job_id in self.store.recover():
            self.dispatch(job_id)
        for job in self.store.list_jobs(None, "awaiting_approval", 500, 0):
            self._close_later(job.id)

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking runs; signal running ones to stop (they end cancelled or failed)."""
        with self._lock:
            for event in self._cancel.values():
                event.set()
            for timer in self._timers.values():
                timer.cancel()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- researcher and node actions -----------------------------------------------------
    def submit(self, owner: PrincipalPublic, raw: dict[str, Any]) -> JobPublic:
        """Validate and store a job.

        The purpose's requester identity is the owner's registered organisation
        (:func:`coordinator.requester.vouch`), whatever the spec claims.

        Raises:
            InvalidSpec: the spec is invalid, claims another requester identity, or no set
                of ``min_nodes`` targeted nodes can run it (the field is named; nothing is
                stored).
            Forbidden: the owner has no registered organisation.
        """
        try:
            spec = parse_job_spec(raw)
        except JobSpecError as exc:
            raise InvalidSpec(exc.reason, field=exc.field) from None
        claims = raw.get("purpose") or {}
        spec = vouch(spec, claims, owner, self.store.organisation_of(owner))
        return self.store.create_job(owner, spec)

    def decide(self, job_id: str, node: str, decision: DecisionCreate, by: str) -> ApprovalPublic:
        """Record a node's decision; start the run once enough nodes approved."""
        approval, approved = self.store.decide(job_id, node, decision, by)
        if approved:
            self.dispatch(job_id)
        elif decision.outcome == "approve":
            self._close_later(job_id)
        return approval

    def _close_later(self, job_id: str) -> None:
        """After the approval grace, run the job on the nodes that approved (if enough)."""
        with self._lock:
            if job_id in self._timers:
                return
            timer = threading.Timer(self.approval_grace, self._close, args=(job_id,))
            timer.daemon = True
            self._timers[job_id] = timer
        timer.start()

    def _close(self, job_id: str) -> None:
        with self._lock:
            self._timers.pop(job_id, None)
        try:
            if self.store.close_approvals(job_id):
                self.dispatch(job_id)
        except Exception:  # noqa: BLE001 - a timer thread must not die silently
            log.exception("job %s: closing the approvals failed", job_id)

    def cancel(self, job_id: str, by: str) -> JobPublic:
        """Cancel a job; a running one is told to stop at its next round."""
        job = self.store.cancel(job_id, by)
        with self._lock:
            event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return job

    # -- runs ----------------------------------------------------------------------------------
    def dispatch(self, job_id: str) -> None:
        """Queue an approved job for a run (no-op without a runner)."""
        if self.runner is None:
            log.info("job %s approved; no runner configured, it waits", job_id)
            return
        with self._lock:
            if job_id in self._futures and not self._futures[job_id].done():
                return
            self._cancel[job_id] = threading.Event()
            try:
                self._futures[job_id] = self._pool.submit(self._run, job_id)
            except RuntimeError:  # shutting down: the job stays approved for the next start
                self._cancel.pop(job_id, None)

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        """Block until the job's run (if any) has returned (tests, ``hamanasu up``)."""
        with self._lock:
            future = self._futures.get(job_id)
        if future is not None:
            future.result(timeout)

    def _run(self, job_id: str) -> None:
        assert self.runner is not None
        cancelled = self._cancel[job_id]
        try:
            if not self.store.start(job_id):
                return  # cancelled before it started
            spec, nodes = self.store.job_spec(job_id)

            def on_progress(p: RoundProgress) -> None:
                self.store.progress(job_id, p.round, p.metrics)
                if cancelled.is_set():
                    raise RunCancelled(job_id)

            try:
                result = self.runner.run(spec, job_id, nodes, on_progress, cancelled)
            except RunCancelled:
                result = RunResult(status="failed", reason="cancelled during the run")
            except Exception as exc:  # a runner's bug must not kill the worker
                log.exception("runner failed on job %s", job_id)
                reason = bounded_reason(f"runner error: {type(exc).__name__}: {exc}")
                result = RunResult(status="failed", reason=reason)
            if not self.store.finish(job_id, result):
                log.info(
                    "job %s ended %s after it left running (kept as is)", job_id, result.status
                )
        except Exception:  # the store is unreachable: the restart path will fail the job
            log.exception("could not record the run of job %s", job_id)
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)
