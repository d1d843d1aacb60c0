"""Jobs: submission, status reads, and the moves of a job through its states."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.orm import Session

from coordinator.db import aware
from coordinator.errors import Conflict, NotFound
from coordinator.models import Approval, Job, JobEvent, Principal, Result
from coordinator.schemas import PrincipalPublic
from coordinator.store.approvals import approval_public
from coordinator.store.base import StoreBase
from coordinator.store.nodes import job_targets
from federation.api_models import TERMINAL_STATES, JobEventPublic, JobPublic
from federation.spec import JobSpec

__all__ = ["RESTART_REASON", "JobStore"]

#: Why a job that was running when the coordinator died is failed on restart.
RESTART_REASON = "coordinator restarted during the run"


def _job_model(job: Any, owner: str, approvals: Iterable[Any], has_result: bool) -> JobPublic:
    """Build a job's public view from a :class:`Job` or a row of :data:`_JOBS`."""
    return JobPublic(
        id=job.id,
        name=job.name,
        kind=job.kind,
        owner=owner,
        state=job.state,
        reason=job.reason,
        nodes=list(job.nodes),
        min_nodes=job.min_nodes,
        round=job.round,
        rounds_total=job.rounds_total,
        metrics=job.metrics or {},
        submitted_at=aware(job.submitted_at),
        updated_at=aware(job.updated_at),
        started_at=aware(job.started_at),
        finished_at=aware(job.finished_at),
        approvals=[approval_public(a) for a in approvals],
        has_result=has_result,
        held=bool(job.held),
    )


#: The columns of a job's public view (not its spec), its owner's name, whether a result
#: is stored: one statement, built once (SQLAlchemy caches its compiled form).
_JOBS = select(
    Job.id,
    Job.name,
    Job.kind,
    Job.owner_id,
    Job.state,
    Job.reason,
    Job.nodes,
    Job.min_nodes,
    Job.round,
    Job.rounds_total,
    Job.metrics,
    Job.submitted_at,
    Job.updated_at,
    Job.started_at,
    Job.finished_at,
    Job.held,
    Principal.name.label("owner"),
    exists().where(Result.job_id == Job.id).label("has_result"),
).outerjoin(Principal, Principal.id == Job.owner_id)
#: One job with its approvals in one statement (a status read is one round trip): a row
#: per approval with the job's columns repeated, or one row of NULL approval columns.
_GET_JOB = (
    _JOBS.add_columns(
        Approval.node.label("a_node"),
        Approval.status.label("a_status"),
        Approval.source.label("a_source"),
        Approval.reasons.label("a_reasons"),
        Approval.decided_by.label("a_decided_by"),
        Approval.decided_at.label("a_decided_at"),
        Approval.updated_at.label("a_updated_at"),
    )
    .outerjoin(Approval, Approval.job_id == Job.id)
    .where(Job.id == bindparam("job_id"))
    .order_by(Approval.node)
)
#: The approvals of some jobs, by job and node.
_APPROVALS_OF_JOBS = (
    select(
        Approval.job_id,
        Approval.node,
        Approval.status,
        Approval.source,
        Approval.reasons,
        Approval.decided_by,
        Approval.decided_at,
        Approval.updated_at,
    )
    .where(Approval.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(Approval.job_id, Approval.node)
)


class JobStore(StoreBase):
    """Jobs: submit, read, start, record progress, fail, cancel, recover after a restart."""

    def create_job(self, owner: PrincipalPublic, spec: JobSpec) -> JobPublic:
        """Store a validated job and its pending approvals; it then awaits approval.

        Raises:
            InvalidSpec: the nodes cannot run it (nothing is stored).
        """
        now = self.clock()
        job_id = uuid.uuid4().hex[:16]
        with self.sessions.begin() as s:
            targets = job_targets(s, spec)
            job = Job(
                id=job_id,
                owner_id=owner.id,
                name=spec.name,
                kind=spec.kind,
                spec=spec.model_dump(mode="json"),
                nodes=[n.name for n in targets],
                min_nodes=spec.min_nodes,
                state="awaiting_approval",
                reason=f"waiting for {spec.min_nodes} of {len(targets)} node(s) to approve",
                round=0,
                rounds_total=spec.rounds if spec.kind == "train" else 1,
                metrics={},
                submitted_at=now,
                updated_at=now,
            )
            s.add(job)
            s.flush()
            s.add(
                JobEvent(
                    job_id=job_id, at=now, state="submitted", reason=f"submitted by {owner.name}"
                )
            )
            s.add(JobEvent(job_id=job_id, at=now, state="awaiting_approval", reason=job.reason))
            for n in targets:
                s.add(
                    Approval(
                        job_id=job_id, node=n.name, status="pending", reasons=[], updated_at=now
                    )
                )
            s.flush()
            return self._job_public(s, job, owner.name)

    def _job_public(self, s: Session, job: Job, owner_name: str | None = None) -> JobPublic:
        if owner_name is None:
            owner_name = s.scalar(select(Principal.name).where(Principal.id == job.owner_id)) or "?"
        approvals = s.execute(_APPROVALS_OF_JOBS, {"job_ids": [job.id]}).all()
        has_result = job.state in TERMINAL_STATES and s.scalar(
            select(func.count()).select_from(Result).where(Result.job_id == job.id)
        )
        return _job_model(job, owner_name, approvals, bool(has_result))

    def _read_jobs(self, stmt: Any, params: dict[str, Any]) -> list[tuple[JobPublic, str]]:
        """Run a :data:`_JOBS` query; return each job with its approvals and owner's id.

        Two statements whatever the number of jobs (the jobs, then all their approvals),
        through a plain autocommit connection: status reads skip the ORM's unit of work
        and, on PostgreSQL, the BEGIN and ROLLBACK round trips.
        """
        with self._reads.connect() as conn:
            rows = conn.execute(stmt, params).all()
            if not rows:
                return []
            by_job: dict[str, list[Any]] = {r.id: [] for r in rows}
            for a in conn.execute(_APPROVALS_OF_JOBS, {"job_ids": list(by_job)}):
                by_job[a.job_id].append(a)
        return [
            (
                _job_model(
                    r,
                    r.owner or "?",
                    by_job[r.id],
                    bool(r.has_result) and r.state in TERMINAL_STATES,
                ),
                r.owner_id,
            )
            for r in rows
        ]

    def get_job(self, job_id: str) -> tuple[JobPublic, str]:
        """Return a job and its owner's principal id.

        Raises:
            NotFound: no such job.
        """
        with self._reads.connect() as conn:
            rows = conn.execute(_GET_JOB, {"job_id": job_id}).all()
        if not rows:
            raise NotFound(f"job_id: no job {job_id!r}", field="job_id")
        r = rows[0]
        approvals = [
            SimpleNamespace(
                job_id=r.id,
                node=a.a_node,
                status=a.a_status,
                source=a.a_source,
                reasons=a.a_reasons,
                decided_by=a.a_decided_by,
                decided_at=a.a_decided_at,
                updated_at=a.a_updated_at,
            )
            for a in rows
            if a.a_node is not None
        ]
        has_result = bool(r.has_result) and r.state in TERMINAL_STATES
        return _job_model(r, r.owner or "?", approvals, has_result), r.owner_id

    def job_spec(self, job_id: str) -> tuple[JobSpec, list[str]]:
        """Return a job's spec and the nodes it runs on (its approved nodes).

        Raises:
            NotFound: no such job.
        """
        with self.sessions() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"job_id: no job {job_id!r}", field="job_id")
            return JobSpec.model_validate(job.spec), list(job.run_nodes or [])

    def list_jobs(
        self,
        owner_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobPublic]:
        """Return jobs, newest first, optionally one owner's or in one state."""
        q = _JOBS.order_by(Job.submitted_at.desc(), Job.id).limit(limit).offset(offset)
        if owner_id is not None:
            q = q.where(Job.owner_id == owner_id)
        if state is not None:
            q = q.where(Job.state == state)
        return [job for job, _ in self._read_jobs(q, {})]

    def start(self, job_id: str) -> bool:
        """Mark an approved job running (returns False if it was cancelled meanwhile)."""
        now = self.clock()
        with self.sessions.begin() as s:
            return self._move(s, job_id, "running", "the run started", ["approved"], started_at=now)

    def progress(self, job_id: str, round_no: int, metrics: dict[str, Any]) -> None:
        """Record that ``round_no`` finished, with its metrics (only while running)."""
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != "running":
                return
            job.round, job.metrics, job.updated_at = round_no, metrics, self.clock()
            job.reason = f"round {round_no} of {job.rounds_total} done"
            s.add(
                JobEvent(
                    job_id=job_id,
                    at=job.updated_at,
                    state="running",
                    reason=job.reason,
                    round=round_no,
                )
            )

    def fail(
        self, job_id: str, reason: str, from_states: Sequence[str] = ("approved", "running")
    ) -> bool:
        """End a job as failed with ``reason`` (only from ``from_states``)."""
        with self.sessions.begin() as s:
            return self._move(s, job_id, "failed", reason, from_states)

    def cancel(self, job_id: str, by: str) -> JobPublic:
        """Cancel a job that has not finished.

        Raises:
            NotFound: no such job.
            Conflict: the job already finished.
        """
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"job_id: no job {job_id!r}", field="job_id")
            if not self._move(
                s,
                job_id,
                "cancelled",
                f"cancelled by {by}",
                ["submitted", "awaiting_approval", "approved", "running"],
            ):
                raise Conflict(
                    f"job {job_id} is {job.state}; it cannot be cancelled", field="job_id"
                )
        return self.get_job(job_id)[0]

    def recover(self) -> list[str]:
        """After a restart: fail the jobs that were running; return approved ones to re-run.

        A job that was running is not re-run: its nodes may already have been charged for
        the rounds done, and running it again would charge them twice.
        """
        with self.sessions.begin() as s:
            running = list(s.scalars(select(Job.id).where(Job.state == "running")))
            for job_id in running:
                self._move(s, job_id, "failed", RESTART_REASON, ["running"])
            return list(
                s.scalars(select(Job.id).where(Job.state == "approved").order_by(Job.updated_at))
            )

    def events(self, job_id: str) -> list[JobEventPublic]:
        """Return a job's history, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
            return [
                JobEventPublic(at=aware(e.at), state=e.state, reason=e.reason, round=e.round)  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
                for e in rows
            ]
