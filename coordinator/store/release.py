"""Release review (output checking): node admins release or withhold a held result."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.db import aware
from coordinator.errors import Conflict, Forbidden, NotFound
from coordinator.models import Job, JobEvent, Principal, ReleaseDecision, ReleaseReview, Result
from coordinator.schemas import PrincipalPublic, Role
from coordinator.store.base import StoreBase
from federation.api_models import ReleaseDecisionCreate, ReleaseDecisionPublic, ReleaseView

__all__ = ["REVIEWS_NEEDED", "ReleaseStore"]

#: Release-review modes that hold a result, and how many distinct reviewers each needs.
REVIEWS_NEEDED = {"admin": 1, "two_reviewers": 2}


def _decision_public(d: ReleaseDecision, reviewer: str) -> ReleaseDecisionPublic:
    return ReleaseDecisionPublic(
        job_id=d.job_id,
        node=d.node,
        decision=d.decision,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
        reason=d.reason,
        reviewer_id=d.reviewer_id,
        reviewer=reviewer,
        result_hash=d.result_hash,
        at=aware(d.at),
    )


class ReleaseStore(StoreBase):
    """Release review: the held results a node sees, its reviewers' decisions."""

    def _decisions(
        self, s: Session, job_id: str | None, node: str | None
    ) -> list[ReleaseDecisionPublic]:
        q = (
            select(ReleaseDecision, Principal.name)
            .join(Principal, Principal.id == ReleaseDecision.reviewer_id)
            .order_by(ReleaseDecision.id)
        )
        if job_id is not None:
            q = q.where(ReleaseDecision.job_id == job_id)
        if node is not None:
            q = q.where(ReleaseDecision.node == node)
        return [_decision_public(d, name) for d, name in s.execute(q).all()]

    def _release_view(self, s: Session, review: ReleaseReview) -> ReleaseView:
        """Return what a node's reviewer sees of a held result: a summary, never its data.

        Raises:
            NotFound: the job or its result is gone (a review is only made for a stored one).
        """
        job = s.get(Job, review.job_id)
        res = s.get(Result, review.job_id)
        if job is None or res is None:
            raise NotFound(f"job_id: job {review.job_id!r} has no stored result", field="job_id")
        owner = s.scalar(select(Principal.name).where(Principal.id == job.owner_id)) or "?"
        eps = (res.epsilon_by_node or {}).get(review.node)
        return ReleaseView(
            job_id=job.id,
            name=job.name,
            owner=owner,
            kind=job.kind,
            state=job.state,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
            node=review.node,
            review=review.mode,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
            status=review.status,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
            reviews_needed=REVIEWS_NEEDED.get(review.mode, 1),
            result_status=res.status,
            result_hash=res.result_hash or "",
            result_created_at=aware(res.created_at),
            has_model=res.model is not None,
            has_plot=res.plot_png is not None,
            report_keys=sorted(res.report or {}),
            epsilon=float(eps) if eps is not None else None,
            decisions=self._decisions(s, job.id, review.node),
        )

    def release_views(self, node: str, status: str | None = None) -> list[ReleaseView]:
        """Return the results held (or decided) for ``node``'s review: summaries, never data."""
        q = (
            select(ReleaseReview)
            .join(Job, Job.id == ReleaseReview.job_id)
            .where(ReleaseReview.node == node)
            .order_by(Job.finished_at, Job.id)
        )
        if status is not None:
            q = q.where(ReleaseReview.status == status)
        with self.sessions() as s:
            return [self._release_view(s, r) for r in s.scalars(q).all()]

    def release_decide(
        self, job_id: str, node: str, decision: ReleaseDecisionCreate, reviewer: PrincipalPublic
    ) -> ReleaseView:
        """Record a node admin's release decision on a held result.

        ``admin`` review: one release releases the node's hold; ``two_reviewers``: two
        distinct reviewers must release. A withhold (with its reason) is final for the
        node: the result stays held. Once every reviewing node released, the job's result
        becomes downloadable. Each decision is also a job event (who, when, why).

        Raises:
            Forbidden: the reviewer does not administer ``node``.
            NotFound: the job's result is not held for this node's review.
            Conflict: the node already decided (released or withheld), or this reviewer
                already decided on it.
        """
        if reviewer.role != Role.NODE_ADMIN or reviewer.node != node:
            raise Forbidden(f"only an admin of node {node!r} may review its release")
        now = self.clock()
        with self.sessions.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            review = s.get(ReleaseReview, (job_id, node))
            res = s.get(Result, job_id)
            if job is None or review is None or res is None:
                raise NotFound(
                    f"job_id: no result of job {job_id!r} awaits node {node!r}'s review",
                    field="job_id",
                )
            if review.status != "held":
                raise Conflict(
                    f"node {node} already {review.status} the result of job {job_id}",
                    field="job_id",
                )
            earlier = list(
                s.scalars(
                    select(ReleaseDecision).where(
                        ReleaseDecision.job_id == job_id, ReleaseDecision.node == node
                    )
                )
            )
            if any(d.reviewer_id == reviewer.id for d in earlier):
                raise Conflict(
                    f"reviewer {reviewer.name} already decided on job {job_id} for node {node}; "
                    "a second, distinct reviewer is needed",
                    field="reviewer",
                )
            reason = (decision.reason or "").strip()[:2000] or None
            s.add(
                ReleaseDecision(
                    job_id=job_id,
                    node=node,
                    reviewer_id=reviewer.id,
                    decision=decision.decision,
                    reason=reason,
                    result_hash=res.result_hash,
                    at=now,
                )
            )
            releases = 1 + sum(1 for d in earlier if d.decision == "release")
            needed = REVIEWS_NEEDED.get(review.mode, 1)
            if decision.decision == "withhold":
                review.status, review.reason = "withheld", reason or ""
                what = f"result withheld by {node} (reviewer {reviewer.name}): {reason}"
            elif releases >= needed:
                review.status, review.reason = "released", reason or ""
                what = (
                    f"result released by {node} (reviewer {reviewer.name}, {releases} of {needed})"
                )
            else:
                what = (
                    f"result release by {node}: reviewer {reviewer.name} released, "
                    f"{releases} of {needed}"
                )
            review.updated_at = now
            s.flush()
            statuses = set(
                s.scalars(select(ReleaseReview.status).where(ReleaseReview.job_id == job_id))
            )
            if statuses == {"released"}:
                job.held = False
                what += "; the result is released"
            job.updated_at = now
            s.add(JobEvent(job_id=job_id, at=now, state=job.state, reason=what))
            s.flush()
            return self._release_view(s, review)

    def release_decisions(
        self, job_id: str | None = None, node: str | None = None
    ) -> list[ReleaseDecisionPublic]:
        """Return reviewers' release decisions, oldest first (auditors)."""
        with self.sessions() as s:
            return self._decisions(s, job_id, node)
