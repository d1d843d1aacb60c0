"""Nodes' approvals of jobs, and the decisions that move a job to approved or failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from coordinator.db import aware
from coordinator.errors import Conflict, InvalidSpec, NotFound
from coordinator.models import Approval, Job, Principal
from coordinator.store.base import StoreBase
from federation.api_models import (
    TERMINAL_STATES,
    ApprovalPublic,
    DecisionCreate,
    DecisionReason,
    NodeJobView,
)

__all__ = ["ApprovalStore", "approval_public"]


def approval_public(a: Any) -> ApprovalPublic:
    """Build an approval's public view from an :class:`Approval` or a row of its columns."""
    return ApprovalPublic(
        job_id=a.job_id,
        node=a.node,
        status=a.status,
        source=a.source,
        reasons=[DecisionReason.model_validate(r) for r in a.reasons or []],
        decided_by=a.decided_by,
        decided_at=aware(a.decided_at),
        updated_at=aware(a.updated_at),
    )


class ApprovalStore(StoreBase):
    """Approvals: what a node sees of the jobs targeting it, its decisions, the wait's end."""

    def node_jobs(
        self, node: str, status: str | None = None, include_finished: bool = False
    ) -> list[NodeJobView]:
        """Return the jobs targeting ``node`` with its approval (unfinished ones unless asked)."""
        q = (
            select(Job, Approval)
            .join(Approval, Approval.job_id == Job.id)
            .where(Approval.node == node)
            .order_by(Job.submitted_at, Job.id)
        )
        if status is not None:
            q = q.where(Approval.status == status)
        if not include_finished:
            q = q.where(Job.state.not_in(TERMINAL_STATES))
        with self.sessions() as s:
            out = []
            for job, appr in s.execute(q).all():
                owner = s.scalar(select(Principal.name).where(Principal.id == job.owner_id)) or "?"
                out.append(
                    NodeJobView(
                        id=job.id,
                        name=job.name,
                        owner=owner,
                        state=job.state,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
                        reason=job.reason,
                        spec=job.spec,
                        submitted_at=aware(job.submitted_at),
                        approval=approval_public(appr),
                    )
                )
            return out

    def decide(
        self, job_id: str, node: str, decision: DecisionCreate, by: str
    ) -> tuple[ApprovalPublic, bool]:
        """Record a node's decision and move the job on when the decisions allow.

        The job becomes ``approved`` once ``min_nodes`` targeted nodes approved and no
        targeted node's policy is still to be evaluated (``pending``; a node waiting for its
        admin does not hold the job back), so a job runs on every node that approves in
        time; :meth:`close_approvals` ends the wait for late nodes. It becomes ``failed``
        once so many rejected that ``min_nodes`` can no longer approve.

        Returns:
            The approval recorded, and whether the job just became approved (to be run).

        Raises:
            NotFound: no such job, or the job does not target the node.
            Conflict: the job already left the approval stage (ran, finished, cancelled).
            InvalidSpec: a rejection without a reason (field ``reasons``).
        """
        if decision.outcome == "reject" and not decision.reasons:
            raise InvalidSpec("a rejection needs at least one reason", field="reasons")
        now = self.clock()
        status = {"approve": "approved", "reject": "rejected", "needs_approval": "needs_approval"}[
            decision.outcome
        ]
        with self.sessions.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            appr = s.get(Approval, (job_id, node))
            if job is None or appr is None:
                raise NotFound(f"job_id: no job {job_id!r} targets node {node!r}", field="job_id")
            if job.state not in ("submitted", "awaiting_approval"):
                raise Conflict(f"job {job_id} is {job.state}; decisions are closed", field="job_id")
            appr.status, appr.source, appr.updated_at = status, decision.source, now
            appr.reasons = [r.model_dump() for r in decision.reasons]
            if status in ("approved", "rejected"):
                appr.decided_by, appr.decided_at = by, now
            s.flush()
            rows = list(s.scalars(select(Approval).where(Approval.job_id == job_id)))
            approved = sorted(a.node for a in rows if a.status == "approved")
            rejected = [a for a in rows if a.status == "rejected"]
            started = False
            pending = sum(1 for a in rows if a.status == "pending")
            if len(approved) >= job.min_nodes and pending:
                job.reason = (
                    f"{len(approved)} approval(s), enough to run; waiting for {pending} "
                    "node(s) to decide"
                )
                job.updated_at = now
            elif len(approved) >= job.min_nodes:
                started = self._move(
                    s,
                    job_id,
                    "approved",
                    f"approved by {', '.join(approved)}",
                    ["submitted", "awaiting_approval"],
                    run_nodes=approved,
                )
            elif len(rows) - len(rejected) < job.min_nodes:
                why = "; ".join(
                    f"{a.node}: " + (", ".join(r["code"] for r in a.reasons) or "rejected")
                    for a in rejected
                )
                self._move(
                    s,
                    job_id,
                    "failed",
                    f"rejected ({why}); {len(rows) - len(rejected)} node(s) left, "
                    f"the job needs {job.min_nodes}",
                    ["submitted", "awaiting_approval"],
                )
            else:
                waiting = len(rows) - len(rejected) - len(approved)
                job.reason = (
                    f"{len(approved)} of {job.min_nodes} approvals; {waiting} node(s) to decide"
                )
                job.updated_at = now
            return approval_public(appr), started

    def close_approvals(self, job_id: str) -> bool:
        """Stop waiting for late nodes: approve the job on the nodes that approved so far.

        Returns:
            True if the job just became approved (to be run); False if it is not awaiting
            approval or has fewer than ``min_nodes`` approvals.
        """
        with self.sessions.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state not in ("submitted", "awaiting_approval"):
                return False
            rows = list(s.scalars(select(Approval).where(Approval.job_id == job_id)))
            approved = sorted(a.node for a in rows if a.status == "approved")
            if len(approved) < job.min_nodes:
                return False
            late = sorted(a.node for a in rows if a.status == "pending")
            return self._move(
                s,
                job_id,
                "approved",
                f"approved by {', '.join(approved)}"
                + (f"; {', '.join(late)} did not decide in time" if late else ""),
                ["submitted", "awaiting_approval"],
                run_nodes=approved,
            )

    def approvals(self, job_id: str | None = None, node: str | None = None) -> list[ApprovalPublic]:
        """Return approvals, optionally of one job or one node."""
        q = select(Approval).order_by(Approval.job_id, Approval.node)
        if job_id is not None:
            q = q.where(Approval.job_id == job_id)
        if node is not None:
            q = q.where(Approval.node == node)
        with self.sessions() as s:
            return [approval_public(a) for a in s.scalars(q)]
