"""What a node's admin can see and do, for the node's admin API and its console.

:class:`NodeAdmin` wraps a :class:`nodes.service.NodeService`: the jobs waiting for this
node with what they would use here (purpose, features, ε, subjects after consent
filtering, the policy's verdict), approve / reject with a reason, results held for
release review, the budget per domain and period, the policy in force, the ledger's
head and its verification. Every failure is an :class:`AdminError` carrying the HTTP
status, a machine code, a public message and the field concerned: a coordinator that
cannot be reached is 503, one that fails is 502; nothing is ever a bare 500.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from consent.signing import SignedTreeHead
from federation.api_models import DecisionReason, NodeJobView, ReleaseDecisionCreate, ReleaseView
from federation.errors import JobSpecError, bounded_reason
from federation.spec import JobSpec, parse_job_spec
from nodes.admin_models import (
    DecisionPublic,
    LedgerHead,
    LedgerVerification,
    PolicyPublic,
    PurposePublic,
    Status,
    WaitingJob,
)
from nodes.service import NodeService, NodeServiceError
from policies import BudgetStatus

__all__ = ["AdminError", "NodeAdmin"]

_ANSWERED = re.compile(r"^coordinator answered (\d{3}): (.*)$", re.S)
_FIELD = re.compile(r"^-{0,2}([a-z_]+)$")


class AdminError(Exception):
    """An admin request that cannot be carried out.

    Attributes:
        status: the HTTP status to answer.
        code: a machine code (``not_found``, ``coordinator_unreachable``, ...).
        message: the public message (never a token).
        field: the request field concerned, if any.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _from_service_error(exc: NodeServiceError) -> AdminError:
    """Map a :class:`NodeServiceError` to its status (the coordinator's answers included)."""
    text = str(exc)
    answered = _ANSWERED.match(text)
    if answered:
        status, detail = int(answered.group(1)), bounded_reason(answered.group(2), 500)
        if status >= 500:
            return AdminError(
                502, "coordinator_error", f"the coordinator failed ({status}): {detail}"
            )
        if status in (401, 403):
            return AdminError(
                502,
                "coordinator_refused_credentials",
                f"the coordinator refused this node's credentials ({status}): {detail}",
            )
        if status == 404:
            return AdminError(404, "not_found", f"the coordinator has no such job: {detail}")
        return AdminError(409, "coordinator_refused", f"the coordinator refused it: {detail}")
    if text.startswith("ledger refuses"):
        return AdminError(422, "invalid_input", text, "reason")
    head, _, _ = text.partition(": ")
    match = _FIELD.match(head)
    field = match.group(1) if match else None
    if field == "reason":
        return AdminError(422, "invalid_input", text, "reason")
    if field == "job":
        return AdminError(404, "not_found", text, "job_id")
    return AdminError(409, "refused", text, field)


@contextmanager
def _coordinator() -> Iterator[None]:
    """Turn the coordinator link's failures into :class:`AdminError` (502/503/4xx)."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise AdminError(
            503,
            "coordinator_unreachable",
            f"the coordinator cannot be reached ({type(exc).__name__}); try again later",
        ) from None
    except NodeServiceError as exc:
        raise _from_service_error(exc) from None


def _code(code: str) -> str:
    """A reason code as the wire model accepts it (``[a-z0-9_]{1,64}``)."""
    return re.sub(r"[^a-z0-9_]", "_", code.lower())[:64] or "reason"


def _purpose(spec: JobSpec) -> PurposePublic:
    p = spec.purpose
    return PurposePublic(
        duo=list(p.duo),
        disease=p.disease,
        project=p.project,
        requester=p.requester,
        requester_type=p.requester_type,
        commercial=p.commercial,
    )


class NodeAdmin:
    """The node admin's view of and actions on one node service.

    Args:
        service: the node service (its link to the coordinator and its enforcement point).
        supernode_status: returns the SuperNode's status (``SupernodeSupervisor.status``).
    """

    def __init__(
        self, service: NodeService, supernode_status: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.service = service
        self.supernode_status = supernode_status
        self._lock = threading.Lock()  # one admin action at a time (API and console)

    @property
    def node(self) -> str:
        """The node's name."""
        return self.service.config.name

    # -- status ------------------------------------------------------------------------------
    def status(self) -> Status:
        """Return the service's last poll and the SuperNode's status (no coordinator call)."""
        supernode: dict[str, Any] | None = None
        if self.supernode_status is not None:
            try:
                supernode = dict(self.supernode_status())
            except Exception as exc:  # a status probe must not break the status page
                supernode = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        cfg = self.service.config
        return Status(
            node=cfg.name,
            coordinator_url=cfg.coordinator_url,
            poll_interval=cfg.poll_interval,
            last_poll_at=self.service.last_poll_at,
            last_poll_error=self.service.last_poll_error,
            supernode=supernode,
        )

    # -- jobs --------------------------------------------------------------------------------
    def _cohort(self, spec: JobSpec) -> int | None:
        """Subjects of the job's table whose consent permits its purpose now (None: no data)."""
        data_dir = self.service.config.data_dir
        if data_dir is None:
            return None
        from nodes.sources import read_columns

        try:
            frame = read_columns(data_dir, spec.domain, spec.columns())
            subjects = frame["subject"].astype(str).to_numpy()
        except (FileNotFoundError, KeyError, ValueError):
            return None
        mask = self.service.point.permitted_subjects(spec, subjects)
        return int(frame.loc[mask, "subject"].nunique())

    def _view(self, job: NodeJobView) -> WaitingJob:
        base: dict[str, Any] = {
            "id": job.id,
            "name": job.name,
            "owner": job.owner,
            "state": job.state,
            "approval_status": job.approval.status,
            "submitted_at": job.submitted_at,
        }
        try:
            spec = parse_job_spec(job.spec)
        except JobSpecError as exc:
            reason = DecisionReason(
                code="invalid_spec", message=bounded_reason(str(exc)) or "invalid"
            )
            return WaitingJob(
                **base, purpose=PurposePublic(), policy_outcome="invalid", reasons=[reason]
            )
        from federation.linkage.reveals import link_key, linkage_statement
        from policies.errors import PolicyError

        try:
            cohort = self._cohort(spec)
            decision = self.service.point.review(spec, job.id, cohort_size=cohort)
        except (OSError, PolicyError) as exc:
            raise AdminError(409, "policy_invalid", f"policy: {exc}", "policy") from None
        return WaitingJob(
            **base,
            link_key=link_key(spec),
            linkage=linkage_statement(spec),
            kind=spec.kind,
            purpose=_purpose(spec),
            domain=spec.domain,
            features=list(spec.features),
            label=spec.label,
            epsilon=spec.privacy.epsilon if spec.privacy else None,
            delta=spec.privacy.delta if spec.privacy else None,
            rounds=spec.rounds,
            subjects_after_consent=cohort,
            policy_outcome=decision.outcome,
            reasons=[
                DecisionReason(code=_code(r.code), message=bounded_reason(r.message) or r.code)
                for r in decision.reasons
            ],
        )

    def _waiting(self) -> list[NodeJobView]:
        with _coordinator():
            return self.service.waiting()

    def waiting(self) -> list[WaitingJob]:
        """Return the jobs waiting for this node's decision, each with what it would use.

        Raises:
            AdminError: the coordinator cannot be reached (503) or fails (502).
        """
        return [self._view(job) for job in self._waiting()]

    def _find(self, job_id: str) -> NodeJobView:
        for job in self._waiting():
            if job.id == job_id:
                return job
        raise AdminError(
            404, "not_found", f"job_id: no job {job_id!r} waits for node {self.node}", "job_id"
        )

    def job(self, job_id: str) -> WaitingJob:
        """Return one waiting job with what it would use here.

        Raises:
            AdminError: no such waiting job (404), or the coordinator fails (502/503).
        """
        return self._view(self._find(job_id))

    def approve(self, job_id: str, reason: str | None = None) -> DecisionPublic:
        """Approve a waiting job (reserving its budget) and post it to the coordinator.

        Raises:
            AdminError: no such waiting job (404), the policy denies it or the budget cannot
                cover it (409), or the coordinator fails (502/503).
        """
        with self._lock:
            self._find(job_id)
            with _coordinator():
                out = self.service.approve(job_id, reason)
        return DecisionPublic(job_id=job_id, **out.model_dump())

    def reject(self, job_id: str, reason: str) -> DecisionPublic:
        """Reject a waiting job with a reason and post it to the coordinator.

        Raises:
            AdminError: a blank reason (422), no such waiting job (404), or the coordinator
                fails (502/503).
        """
        if not reason.strip():
            raise AdminError(422, "invalid_input", "reason: a rejection needs a reason", "reason")
        with self._lock:
            self._find(job_id)
            with _coordinator():
                out = self.service.reject(job_id, reason)
        return DecisionPublic(job_id=job_id, **out.model_dump())

    # -- release review ------------------------------------------------------------------------
    def held(self) -> list[ReleaseView]:
        """Return the results held for this node's release review (summaries, no data).

        Raises:
            AdminError: the coordinator cannot be reached (503) or fails (502).
        """
        with _coordinator():
            return self.service.held()

    def review(self, job_id: str, decision: str, reason: str | None = None) -> ReleaseView:
        """Release or withhold a held result; the node's ledger records the decision.

        Raises:
            AdminError: a withhold without a reason or a reason the ledger refuses (422), no
                such held result (404), the coordinator refuses (409) or fails (502/503).
        """
        try:
            ReleaseDecisionCreate(decision=decision, reason=reason)  # type: ignore[arg-type]
        except ValueError:
            raise AdminError(
                422, "invalid_input", "reason: a withheld result needs a reason", "reason"
            ) from None
        with self._lock:
            if not any(v.job_id == job_id for v in self.held()):
                raise AdminError(
                    404,
                    "not_found",
                    f"job_id: no result of job {job_id!r} waits for node {self.node}'s review",
                    "job_id",
                )
            with _coordinator():
                return self.service.review_result(job_id, decision, reason)

    # -- local state: budget, policy, ledger ------------------------------------------------
    def budget(self, at: datetime | None = None) -> list[BudgetStatus]:
        """Return the privacy budget per domain for the period containing ``at`` (default now).

        Raises:
            AdminError: ``at`` is not a usable time (422).
        """
        from policies.errors import PolicyError

        try:
            rows = self.service.point.budget().show(at or datetime.now(UTC))
        except (PolicyError, ValueError, OverflowError) as exc:
            raise AdminError(422, "invalid_input", f"at: {exc}", "at") from None
        return rows

    def policy(self) -> PolicyPublic:
        """Return the policy in force (its TOML text and the parsed model).

        Raises:
            AdminError: the policy file is unreadable or invalid (409).
        """
        from policies.errors import PolicyError

        try:
            policy = self.service.point.policy()
            text = self.service.point.state.policy_path.read_text(encoding="utf-8")
        except (OSError, PolicyError) as exc:
            raise AdminError(409, "policy_invalid", f"policy: {exc}", "policy") from None
        return PolicyPublic(toml=text, policy=policy.model_dump(mode="json"))

    def ledger_head(self) -> LedgerHead:
        """Return the ledger's size and its latest signed head (signs nothing)."""
        ledger = self.service.point.ledger()
        size = int(ledger.size)
        head = ledger.latest_head()
        return LedgerHead(
            size=size, latest_head=head, covers_all=head is not None and head.tree_size == size
        )

    def sign_head(self) -> SignedTreeHead:
        """Sign the ledger's current head and return it.

        Raises:
            AdminError: the node has no signing key (409).
        """
        from consent.errors import ConsentError

        with self._lock:
            try:
                head: SignedTreeHead = self.service.point.ledger().sign_head()
            except ConsentError as exc:
                raise AdminError(409, "ledger_unsigned", f"ledger: {exc}") from None
        return head

    def verify(self) -> LedgerVerification:
        """Verify the node's ledger (every entry, node and signed head) with its public key.

        Returns:
            ``ok`` and what was verified, or ``ok = False`` with the first bad entry and why.

        Raises:
            AdminError: the node has no public key (409).
        """
        from consent.errors import ConsentError, LedgerVerificationError
        from consent.signing import load_public_key
        from consent.verify import verify_ledger

        state = self.service.point.state
        try:
            key = load_public_key(state.public_key_path)
        except (OSError, ConsentError, ValueError) as exc:
            raise AdminError(409, "no_public_key", f"public key: {exc}") from None
        try:
            report = verify_ledger(state.ledger_path, key)
        except LedgerVerificationError as exc:
            return LedgerVerification(
                ok=False, bad_index=exc.index, reason=bounded_reason(exc.reason, 500)
            )
        except ConsentError as exc:
            return LedgerVerification(ok=False, reason=bounded_reason(str(exc), 500))
        except (TypeError, sqlite3.Error) as exc:  # a cell of the wrong type: not a ledger
            return LedgerVerification(
                ok=False, reason=f"the ledger file is malformed ({type(exc).__name__}: {exc})"
            )
        return LedgerVerification(
            ok=True,
            tree_size=report.tree_size,
            root_hash=report.root_hash,
            heads_checked=report.heads_checked,
            entries_by_kind=dict(report.entries_by_kind),
        )
