"""Run results: storing one (and holding it for release review), reading it, the ε spent."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.db import aware
from coordinator.errors import NotFound, ResultHeld
from coordinator.models import Job, JobEvent, Node, ReleaseReview, Result
from coordinator.runner import RunResult
from coordinator.schemas import EpsilonByNode, ResultPublic
from coordinator.store.base import StoreBase
from coordinator.store.release import REVIEWS_NEEDED

__all__ = ["ResultStore", "result_hash"]


def result_hash(
    status: str,
    report: dict[str, Any],
    model: dict[str, Any] | None,
    epsilon_by_node: dict[str, Any],
    plot_png: bytes | None,
) -> str:
    """Return the SHA-256 (hex) of a result: canonical JSON of its parts and its plot's digest.

    Reviewers' decisions and the nodes' ledger entries name this hash, so a release is
    bound to the exact result the reviewer saw.
    """
    doc = {
        "status": status,
        "report": report,
        "model": model,
        "epsilon_by_node": epsilon_by_node,
        "plot_sha256": hashlib.sha256(plot_png).hexdigest() if plot_png is not None else None,
    }
    canonical = json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResultStore(StoreBase):
    """Results: the run's outcome, the release hold, downloads, ε by node."""

    def finish(self, job_id: str, result: RunResult) -> bool:
        """Store a run's result and end the job (unless it was cancelled meanwhile).

        Returns:
            Whether the job was still running (if not, the result is stored but the state kept).
        """
        now = self.clock()
        digest = result_hash(
            result.status,
            result.report,
            result.model,
            dict(result.epsilon_by_node),
            result.plot_png,
        )
        with self.sessions.begin() as s:
            s.merge(
                Result(
                    job_id=job_id,
                    status=result.status,
                    report=result.report,
                    model=result.model,
                    epsilon_by_node=dict(result.epsilon_by_node),
                    plot_png=result.plot_png,
                    created_at=now,
                    result_hash=digest,
                )
            )
            moved = self._move(s, job_id, result.status, result.reason, ["running"])
            self._hold(s, job_id, now)
            return moved

    def _hold(self, s: Session, job_id: str, now: datetime) -> None:
        """Hold a stored result when a node it ran on reviews releases (its published caps)."""
        job = s.get(Job, job_id)
        if job is None:
            return
        names = list(job.run_nodes or job.nodes or [])
        modes = {
            n.name: n.release_review for n in s.scalars(select(Node).where(Node.name.in_(names)))
        }
        reviewing = sorted(n for n, m in modes.items() if m in REVIEWS_NEEDED)
        if not reviewing:
            return
        for name in reviewing:
            s.merge(
                ReleaseReview(
                    job_id=job_id,
                    node=name,
                    mode=modes[name],
                    status="held",
                    reason="",
                    updated_at=now,
                )
            )
        job.held = True
        why = ", ".join(f"{n} ({str(modes[n]).replace('_', ' ')})" for n in reviewing)
        s.add(
            JobEvent(
                job_id=job_id,
                at=now,
                state=job.state,
                reason=f"result held for release review by {why}",
            )
        )

    def _check_released(self, s: Session, job_id: str) -> None:
        job = s.get(Job, job_id)
        if job is None or not job.held:
            return
        reviews = list(
            s.scalars(
                select(ReleaseReview)
                .where(ReleaseReview.job_id == job_id)
                .order_by(ReleaseReview.node)
            )
        )
        withheld = [f"{r.node}: {r.reason}" for r in reviews if r.status == "withheld"]
        waiting = [r.node for r in reviews if r.status == "held"]
        if withheld:
            raise ResultHeld(
                f"the result of job {job_id} was withheld by its nodes' release review "
                f"({'; '.join(withheld)})",
                field="job_id",
            )
        raise ResultHeld(
            f"the result of job {job_id} is held until node(s) {', '.join(waiting)} release it "
            "(output checking)",
            field="job_id",
        )

    def result(self, job_id: str) -> ResultPublic:
        """Return a job's stored result.

        Raises:
            NotFound: the job has no result (yet).
            ResultHeld: the result waits for, or was withheld by, a node's release review.
        """
        with self.sessions() as s:
            self._check_released(s, job_id)
            r = s.get(Result, job_id)
            if r is None:
                raise NotFound(f"job {job_id} has no result", field="job_id")
            return ResultPublic(
                job_id=r.job_id,
                status=r.status,
                report=r.report,
                model=r.model,
                epsilon_by_node=r.epsilon_by_node or {},
                has_plot=r.plot_png is not None,
                created_at=aware(r.created_at),
                result_hash=r.result_hash,
            )

    def plot(self, job_id: str) -> bytes:
        """Return a job's report plot (PNG).

        Raises:
            NotFound: no result or no plot.
            ResultHeld: the result waits for, or was withheld by, a node's release review.
        """
        with self.sessions() as s:
            self._check_released(s, job_id)
            png = s.scalar(select(Result.plot_png).where(Result.job_id == job_id))
            if png is None:
                raise NotFound(f"job {job_id} has no plot", field="job_id")
            return bytes(png)

    def epsilon_by_node(self) -> list[EpsilonByNode]:
        """Return the ε each node spent, summed over the stored results."""
        totals: dict[str, dict[str, float]] = {}
        with self.sessions() as s:
            for job_id, eps in s.execute(select(Result.job_id, Result.epsilon_by_node)):
                for node, value in (eps or {}).items():
                    totals.setdefault(node, {})[job_id] = float(value)
        return [
            EpsilonByNode(node=n, jobs=len(j), epsilon_total=sum(j.values()), by_job=j)
            for n, j in sorted(totals.items())
        ]
