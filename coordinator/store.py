"""The coordinator's store: principals and tokens, nodes, jobs, approvals, results.

Every method runs in its own transaction and either commits all it changes or nothing.
State changes of a job are conditional updates (``... WHERE state IN (...)``), so a
cancel racing a start, or two workers racing one job, cannot both win; every change
appends a :class:`~coordinator.models.JobEvent` in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace
from typing import Any, overload

from argon2 import PasswordHasher
from sqlalchemy import Engine, bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from coordinator.auth import TokenVerifier, new_token, split_token
from coordinator.db import make_sessionmaker
from coordinator.errors import Conflict, Forbidden, InvalidSpec, NotFound, ResultHeld, Unauthorized
from coordinator.models import (
    Approval,
    Job,
    JobEvent,
    Node,
    Principal,
    ReleaseDecision,
    ReleaseReview,
    Result,
    Token,
)
from coordinator.runner import RunResult
from coordinator.schemas import (
    EpsilonByNode,
    NodeCreate,
    NodePublic,
    PrincipalCreate,
    PrincipalPublic,
    ResultPublic,
    TokenIssued,
    TokenPublic,
)
from federation.api_models import (
    TERMINAL_STATES,
    ApprovalPublic,
    DecisionCreate,
    DecisionReason,
    JobEventPublic,
    JobPublic,
    NodeJobView,
    NodeRegistration,
    ReleaseDecisionCreate,
    ReleaseDecisionPublic,
    ReleaseView,
)
from federation.spec import JobSpec

__all__ = ["RESTART_REASON", "Store", "result_hash", "utc_now"]

#: Release-review modes that hold a result, and how many distinct reviewers each needs.
REVIEWS_NEEDED = {"admin": 1, "two_reviewers": 2}

#: Why a job that was running when the coordinator died is failed on restart.
RESTART_REASON = "coordinator restarted during the run"


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


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


def _publishes(node: Node, domain: str, column: str) -> bool:
    """Whether ``node`` publishes ``column`` for ``domain`` (a node with no domains: all)."""
    return (
        not node.domains
        or node.domains.get(domain) == "*"
        or column in (node.domains.get(domain) or [])
    )


def _decision_public(d: ReleaseDecision, reviewer: str) -> ReleaseDecisionPublic:
    return ReleaseDecisionPublic(
        job_id=d.job_id,
        node=d.node,
        decision=d.decision,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
        reason=d.reason,
        reviewer_id=d.reviewer_id,
        reviewer=reviewer,
        result_hash=d.result_hash,
        at=_aware(d.at),
    )


def _principal_public(p: Principal) -> PrincipalPublic:
    return PrincipalPublic(
        id=p.id,
        name=p.name,
        role=p.role,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
        node=p.node,
        created_at=_aware(p.created_at),
        disabled_at=_aware(p.disabled_at),
    )


def _node_public(n: Node) -> NodePublic:
    return NodePublic(
        name=n.name,
        registered_at=_aware(n.registered_at),
        last_seen_at=_aware(n.last_seen_at),
        max_epsilon_per_job=n.max_epsilon_per_job,
        domains=n.domains or {},
        approval_mode=n.approval_mode,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
        public_key_pem=n.public_key_pem,
        release_review=n.release_review,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
    )


def _approval_public(a: Any) -> ApprovalPublic:
    """Build an approval's public view from an :class:`Approval` or a row of its columns."""
    return ApprovalPublic(
        job_id=a.job_id,
        node=a.node,
        status=a.status,
        source=a.source,
        reasons=[DecisionReason.model_validate(r) for r in a.reasons or []],
        decided_by=a.decided_by,
        decided_at=_aware(a.decided_at),
        updated_at=_aware(a.updated_at),
    )


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
        submitted_at=_aware(job.submitted_at),
        updated_at=_aware(job.updated_at),
        started_at=_aware(job.started_at),
        finished_at=_aware(job.finished_at),
        approvals=[_approval_public(a) for a in approvals],
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


def _registered_node(s: Session, name: str) -> Node:
    """Return node ``name`` in session ``s``.

    Raises:
        NotFound: the node is not registered (field ``name``).
    """
    n = s.get(Node, name)
    if n is None:
        raise NotFound(f"name: no node named {name!r}", field="name")
    return n


class Store:
    """All persistent state of the coordinator, behind typed methods.

    Args:
        engine: a migrated engine (see :func:`coordinator.db.migrate`).
        hasher: the argon2id hasher of API tokens.
        verifier: checks and briefly caches verified tokens.
        clock: returns "now" (tests pass a fixed clock).
    """

    def __init__(
        self,
        engine: Engine,
        hasher: PasswordHasher,
        verifier: TokenVerifier,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        # Status reads run each statement on its own (no BEGIN/ROLLBACK round trips on
        # PostgreSQL); under READ COMMITTED each statement saw its own snapshot anyway.
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        #: SQLite reads are local and never wait for a writer (WAL): a status read costs
        #: less than handing it to a thread, so the routes may run it on the event loop.
        #: PostgreSQL reads wait on the network and belong in the thread pool.
        self.reads_are_local = engine.dialect.name == "sqlite"
        self.hasher = hasher
        self.verifier = verifier
        self.clock = clock
        self._principals: dict[str, PrincipalPublic] = {}

    # -- principals and tokens -------------------------------------------------------------
    def create_principal(self, data: PrincipalCreate) -> tuple[PrincipalPublic, TokenIssued]:
        """Register a principal and issue its first token.

        Returns:
            The principal and the token (the only time the token is shown).

        Raises:
            Conflict: the name is taken.
            NotFound: a node admin's node is not registered.
        """
        now = self.clock()
        issued = new_token(self.hasher)
        with self.sessions.begin() as s:
            if data.node is not None and s.get(Node, data.node) is None:
                raise NotFound(f"node: no node named {data.node!r}", field="node")
            if s.scalar(select(Principal.id).where(Principal.name == data.name)) is not None:
                raise Conflict(f"name: a principal named {data.name!r} exists", field="name")
            p = Principal(
                id=uuid.uuid4().hex, name=data.name, role=data.role, node=data.node, created_at=now
            )
            s.add(p)
            s.flush()
            s.add(Token(prefix=issued.prefix, principal_id=p.id, hash=issued.hash, created_at=now))
            public = _principal_public(p)
        return public, TokenIssued(
            prefix=issued.prefix, principal_id=public.id, created_at=now, token=issued.token
        )

    def list_principals(self) -> list[PrincipalPublic]:
        """Return every principal, oldest first."""
        with self.sessions() as s:
            return [
                _principal_public(p)
                for p in s.scalars(select(Principal).order_by(Principal.created_at))
            ]

    def issue_token(self, principal_id: str) -> TokenIssued:
        """Issue another token for a principal.

        Raises:
            NotFound: no such principal.
        """
        now = self.clock()
        issued = new_token(self.hasher)
        with self.sessions.begin() as s:
            if s.get(Principal, principal_id) is None:
                raise NotFound("principal_id: no such principal", field="principal_id")
            s.add(
                Token(
                    prefix=issued.prefix,
                    principal_id=principal_id,
                    hash=issued.hash,
                    created_at=now,
                )
            )
        return TokenIssued(
            prefix=issued.prefix, principal_id=principal_id, created_at=now, token=issued.token
        )

    def revoke_token(self, prefix: str) -> TokenPublic:
        """Revoke a token by its prefix (idempotent); it stops working at once.

        Raises:
            NotFound: no such token.
        """
        with self.sessions.begin() as s:
            tok = s.get(Token, prefix)
            if tok is None:
                raise NotFound("prefix: no such token", field="prefix")
            if tok.revoked_at is None:
                tok.revoked_at = self.clock()
            out = TokenPublic(
                prefix=tok.prefix,
                principal_id=tok.principal_id,
                created_at=_aware(tok.created_at),
                revoked_at=_aware(tok.revoked_at),
            )
        self.verifier.forget(prefix=prefix)
        return out

    def cached_principal(self, token: str) -> PrincipalPublic | None:
        """Return the principal of a token verified less than ``token_cache_seconds`` ago.

        No database access and no argon2: callers on an event loop use it as the fast
        path, and fall back to :meth:`authenticate` (blocking) when it returns None.

        Returns:
            The principal, or None if the token is not in the cache (or malformed).
        """
        if split_token(token) is None:
            return None
        principal_id = self.verifier.cached(token)
        if principal_id is None:
            return None
        return self._principals.get(principal_id)

    def authenticate(self, token: str) -> PrincipalPublic:
        """Return the principal holding ``token``.

        Raises:
            Unauthorized: the token is malformed, unknown, revoked, or its principal disabled
                (one message for all, so a caller learns nothing about which).
        """
        denied = Unauthorized("invalid or revoked token")
        prefix = split_token(token)
        if prefix is None:
            raise denied
        cached = self.cached_principal(token)
        if cached is not None:
            return cached
        generation = self.verifier.generation
        principal_id = self.verifier.cached(token)
        with self.sessions() as s:
            if principal_id is None:
                row = s.get(Token, prefix)
                if row is None or row.revoked_at is not None:
                    self.hasher.hash("hmn_timing_equaliser")  # similar cost for unknown prefixes
                    raise denied
                if not self.verifier.verify(token, row.hash, row.principal_id, prefix, generation):
                    raise denied
                principal_id = row.principal_id
            p = s.get(Principal, principal_id)
            if p is None or p.disabled_at is not None:
                raise denied
            public = _principal_public(p)
            if len(self._principals) < 10_000:
                self._principals[principal_id] = public  # principals never change once created
            return public

    # -- nodes -------------------------------------------------------------------------------
    def register_node(self, data: NodeCreate) -> NodePublic:
        """Register a node (operator).

        Raises:
            Conflict: the name is taken.
        """
        with self.sessions.begin() as s:
            if s.get(Node, data.name) is not None:
                raise Conflict(f"name: node {data.name!r} is registered", field="name")
            n = Node(
                name=data.name,
                registered_at=self.clock(),
                max_epsilon_per_job=data.max_epsilon_per_job,
                domains=dict(data.domains),
                approval_mode=data.approval_mode,
                public_key_pem=data.public_key_pem,
                release_review=data.release_review,
            )
            s.add(n)
            s.flush()
            return _node_public(n)

    def publish_node(self, name: str, data: NodeRegistration) -> NodePublic:
        """Record the caps a node's service publishes, and that it was seen now.

        Raises:
            NotFound: the node is not registered.
        """
        with self.sessions.begin() as s:
            n = _registered_node(s, name)
            n.max_epsilon_per_job = data.max_epsilon_per_job
            n.domains = dict(data.domains)
            n.approval_mode = data.approval_mode
            n.public_key_pem = data.public_key_pem
            n.release_review = data.release_review
            n.last_seen_at = self.clock()
            return _node_public(n)

    def set_supernode_key(self, name: str, public_key: str) -> None:
        """Record node ``name``'s SuperNode public key (registered with the SuperLink).

        Raises:
            NotFound: the node is not registered.
        """
        with self.sessions.begin() as s:
            _registered_node(s, name).supernode_key = public_key.strip()

    def supernode_keys(self) -> dict[str, str]:
        """Return node name -> SuperNode public key, for every node that has one."""
        with self.sessions() as s:
            rows = s.execute(select(Node.name, Node.supernode_key).order_by(Node.name))
            return {name: key for name, key in rows if key}

    def list_nodes(self) -> list[NodePublic]:
        """Return every registered node, by name."""
        with self.sessions() as s:
            return [_node_public(n) for n in s.scalars(select(Node).order_by(Node.name))]

    # -- jobs ----------------------------------------------------------------------------------
    def _targets(self, s: Session, spec: JobSpec) -> list[Node]:
        """Check the job against the nodes' published caps; return the targeted nodes.

        Raises:
            InvalidSpec: an unknown node, or fewer eligible nodes than ``min_nodes`` because of
                the domain, a feature, or ε (naming that field).
        """
        known = {n.name: n for n in s.scalars(select(Node).order_by(Node.name))}
        if spec.nodes:
            unknown = [n for n in spec.nodes if n not in known]
            if unknown:
                raise InvalidSpec(
                    f"unknown node(s) {unknown}; registered: {sorted(known)}", field="nodes"
                )
            targets = [known[n] for n in spec.nodes]
        else:
            targets = list(known.values())
        if len(targets) < spec.min_nodes:
            raise InvalidSpec(
                f"the job needs {spec.min_nodes} nodes; {len(targets)} targeted", field="min_nodes"
            )
        eligible = list(targets)

        def narrow(field: str, keep: Callable[[Node], bool], why: str) -> None:
            nonlocal eligible
            kept = [n for n in eligible if keep(n)]
            if len(kept) < spec.min_nodes:
                raise InvalidSpec(
                    f"{why}; {len(kept)} targeted node(s) allow it, the job needs {spec.min_nodes}",
                    field=field,
                )
            eligible = kept

        narrow(
            "domain",
            lambda n: not n.domains or spec.domain in n.domains,
            f"domain {spec.domain!r} is not served",
        )
        for col in spec.columns():
            field = "label" if col == spec.label else "features"
            narrow(
                field,
                partial(_publishes, domain=spec.domain, column=col),
                f"column {col!r} is not published by the nodes for domain {spec.domain!r}",
            )
        if spec.privacy is not None:
            eps = spec.privacy.epsilon
            caps = {
                n.name: n.max_epsilon_per_job for n in eligible if n.max_epsilon_per_job is not None
            }
            narrow(
                "privacy.epsilon",
                lambda n: n.max_epsilon_per_job is None or eps <= n.max_epsilon_per_job,
                f"epsilon {eps} is above the per-job caps {caps}",
            )
        return targets

    def create_job(self, owner: PrincipalPublic, spec: JobSpec) -> JobPublic:
        """Store a validated job and its pending approvals; it then awaits approval.

        Raises:
            InvalidSpec: the nodes cannot run it (nothing is stored).
        """
        now = self.clock()
        job_id = uuid.uuid4().hex[:16]
        with self.sessions.begin() as s:
            targets = self._targets(s, spec)
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
                        submitted_at=_aware(job.submitted_at),
                        approval=_approval_public(appr),
                    )
                )
            return out

    def _move(
        self,
        s: Session,
        job_id: str,
        to: str,
        reason: str,
        from_states: Iterable[str],
        round_no: int | None = None,
        **values: Any,
    ) -> bool:
        now = self.clock()
        values = {"state": to, "reason": reason, "updated_at": now, **values}
        if to in TERMINAL_STATES:
            values.setdefault("finished_at", now)
        res = s.execute(
            update(Job).where(Job.id == job_id, Job.state.in_(list(from_states))).values(**values)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return False
        s.add(JobEvent(job_id=job_id, at=now, state=to, reason=reason, round=round_no))
        return True

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
            return _approval_public(appr), started

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
                JobEventPublic(at=_aware(e.at), state=e.state, reason=e.reason, round=e.round)  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
                for e in rows
            ]

    def approvals(self, job_id: str | None = None, node: str | None = None) -> list[ApprovalPublic]:
        """Return approvals, optionally of one job or one node."""
        q = select(Approval).order_by(Approval.job_id, Approval.node)
        if job_id is not None:
            q = q.where(Approval.job_id == job_id)
        if node is not None:
            q = q.where(Approval.node == node)
        with self.sessions() as s:
            return [_approval_public(a) for a in s.scalars(q)]

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
                created_at=_aware(r.created_at),
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

    # -- release review (output checking) --------------------------------------------------------
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
        job = s.get(Job, review.job_id)
        res = s.get(Result, review.job_id)
        assert job is not None and res is not None
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
            result_created_at=_aware(res.created_at),
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
        if reviewer.role != "node_admin" or reviewer.node != node:
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

    def ping(self) -> None:
        """Run a trivial query (health check).

        Raises:
            sqlalchemy.exc.OperationalError: the database is unreachable.
        """
        with self.sessions() as s:
            s.execute(select(1))
