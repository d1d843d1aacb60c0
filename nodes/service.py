"""The node service: a node's outbound-only link to the coordinator.

It never listens. Every ``poll_interval`` seconds it publishes the node's caps
(:class:`federation.api_models.NodeRegistration`: per-job ε cap, served domains and
columns, approval mode, public key), pulls the jobs that target the node, evaluates
each new one against the node's policy (:meth:`nodes.enforcement.EnforcementPoint.review`,
no side effects) and posts the outcome: ``approve`` (the policy allows it), ``reject``
with every reason, or ``needs_approval`` (it waits for the admin's
``hamanasu node approvals approve|reject``). When a job it holds a budget reservation
for has ended (e.g. a coordinator that died mid-run failed it on restart), it releases
what the job did not use.

Release review (output checking): the caps include the policy's ``[release] review``; the
coordinator then holds the results of jobs the node ran until its admin (or two distinct
admins) release them. ``hamanasu node approvals release|withhold JOB --reason`` posts the
decision and appends ``result.released`` / ``result.withheld`` (job, reviewer principal id,
decision, reason, result hash) to the node's signed ledger.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from federation import api_client
from federation.api_models import (
    TERMINAL_STATES,
    DecisionCreate,
    DecisionReason,
    NodeJobView,
    NodeRegistration,
    ReleaseDecisionCreate,
    ReleaseView,
)
from federation.audit_models import AuditReceipt
from federation.errors import JobSpecError, bounded_reason
from federation.spec import parse_job_spec
from nodes.enforcement import EnforcementPoint, JobRefused
from nodes.settings import NodeServiceConfig, NodeServiceError, load_node_config

__all__ = [
    "CoordinatorLink",
    "NodeService",
    "NodeServiceConfig",
    "NodeServiceError",
    "load_node_config",
    "read_token",
]

log = logging.getLogger("hamanasu.node.service")


def read_token(token_file: Path | None) -> str:
    """Return the API token from ``token_file`` (must be 0600) or ``HAMANASU_TOKEN``.

    Raises:
        NodeServiceError: no token, or a token file missing or readable by others.
    """
    try:
        return api_client.read_token(token_file, "token_file")
    except api_client.TokenError as exc:
        raise NodeServiceError(str(exc)) from None


class CoordinatorLink:
    """The node's calls to the coordinator (outbound HTTPS only).

    Args:
        client: an ``httpx.Client`` whose base URL is the coordinator and whose headers carry
            the node admin's bearer token.
        node: the node's name.
    """

    def __init__(self, client: httpx.Client, node: str) -> None:
        self.client, self.node = client, node

    @classmethod
    def connect(
        cls, url: str, token: str, node: str, ca_file: Path | None = None, timeout: float = 30.0
    ) -> CoordinatorLink:
        """Open a link to ``url`` with ``token``."""
        verify: Any = str(ca_file) if ca_file else True
        client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=timeout,
        )
        return cls(client, node)

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            refusal = api_client.read_refusal(resp)
            raise NodeServiceError(f"coordinator answered {refusal.status}: {refusal.message}")
        return resp.json()

    def publish(self, registration: NodeRegistration) -> None:
        """Publish the node's caps (and show the coordinator the service is alive)."""
        self._check(
            self.client.put(
                f"/nodes/{self.node}/registration", json=registration.model_dump(mode="json")
            )
        )

    def jobs(self, status: str | None = None, include_finished: bool = False) -> list[NodeJobView]:
        """Return the jobs targeting this node."""
        params: dict[str, Any] = {"include_finished": include_finished}
        if status:
            params["status"] = status
        data = self._check(self.client.get(f"/nodes/{self.node}/jobs", params=params))
        return [NodeJobView.model_validate(j) for j in data]

    def decide(self, job_id: str, decision: DecisionCreate) -> None:
        """Post the node's decision on a job."""
        self._check(
            self.client.post(
                f"/nodes/{self.node}/jobs/{job_id}/decision", json=decision.model_dump(mode="json")
            )
        )

    def me(self) -> dict[str, Any]:
        """Return the calling principal (its ``id`` is the reviewer id the ledger records)."""
        data = self._check(self.client.get("/me"))
        return dict(data)

    def releases(self, status: str | None = None) -> list[ReleaseView]:
        """Return the results held for this node's release review (summaries, no data)."""
        params = {"status": status} if status else {}
        data = self._check(self.client.get(f"/nodes/{self.node}/releases", params=params))
        return [ReleaseView.model_validate(v) for v in data]

    def release(self, job_id: str, decision: ReleaseDecisionCreate) -> ReleaseView:
        """Post a reviewer's release decision on a held result."""
        data = self._check(
            self.client.post(
                f"/nodes/{self.node}/jobs/{job_id}/release", json=decision.model_dump(mode="json")
            )
        )
        return ReleaseView.model_validate(data)

    def publish_audit(self, point: EnforcementPoint) -> AuditReceipt:
        """Push the node's audit snapshot: new ledger entries, signed head, consent counts, budget.

        See :mod:`nodes.audit_publish`; the coordinator verifies the head and answers.
        """
        from nodes.audit_publish import push_audit_snapshot

        return push_audit_snapshot(self.client, self.node, point, self._check)


class NodeService:
    """One node's service loop and its admin's actions.

    Args:
        config: the node's configuration.
        link: its link to the coordinator, with the node service's own token.
        admin_link: the link the human admin's actions go through (their own token); by
            default ``link``.
    """

    def __init__(
        self,
        config: NodeServiceConfig,
        link: CoordinatorLink,
        admin_link: CoordinatorLink | None = None,
    ) -> None:
        self.config = config
        self.link = link
        self.admin_link = admin_link or link
        self.point = EnforcementPoint(config.name, config.state_dir)
        self._recovered = False
        #: When the last poll finished (UTC), and why it failed (None: it succeeded).
        self.last_poll_at: datetime | None = None
        self.last_poll_error: str | None = None
        #: The SuperNode's status, if the node runs one (``SupernodeSupervisor.status``).
        self.supernode_status: Callable[[], dict[str, Any]] | None = None

    def check_credential(self) -> None:
        """Check the service's token is this node's service token, not a human's.

        A ``node.toml`` from before node services had their own tokens names the node
        admin's token in ``token_file``; the coordinator refuses it on every route the
        service pushes to or polls, so the service stops at once, saying what to do.

        Raises:
            NodeServiceError: the token is a human's or another node's (one line naming
                ``token_file`` and how to get a service token), or the coordinator
                refused it.
            httpx.HTTPError: the coordinator cannot be reached.
        """
        me = self.link.me()
        role, node, name = me.get("role"), me.get("node"), self.config.name
        if role == "node_service" and node == name:
            return
        where = self.config.token_file or "HAMANASU_TOKEN"
        whose = f"node {node}'s service" if role == "node_service" else f"a {role}"
        raise NodeServiceError(
            f"token_file: {where} holds {whose} token, and the node service now needs its "
            f"own: ask the operator for node {name}'s service token (hamanasu coordinator "
            f"node-service-token {name} --out FILE), name that file in token_file, and keep "
            "your admin token in admin_token_file"
        )

    # -- what the node publishes -------------------------------------------------------------
    def registration(self) -> NodeRegistration:
        """Return the node's caps, from its policy (no data)."""
        policy = self.point.policy()
        domains: dict[str, Any] = {}
        for name, rules in policy.domains.items():
            if self.config.domains is None or name in self.config.domains:
                domains[name] = "*" if rules.features == "*" else list(rules.features)
        key = self.point.state.public_key_path
        return NodeRegistration(
            max_epsilon_per_job=policy.max_epsilon_per_job,
            domains=domains,
            approval_mode=policy.approval.mode,
            public_key_pem=key.read_text(encoding="utf-8") if key.exists() else None,
            release_review=policy.release.review,
        )

    # -- evaluation ----------------------------------------------------------------------------
    def _cohort(self, spec: Any) -> int | None:
        if self.config.data_dir is None:
            return None
        from nodes.sources import read_columns

        try:
            frame = read_columns(self.config.data_dir, spec.domain, spec.columns())
        except (FileNotFoundError, KeyError, ValueError):
            return None
        mask = self.point.permitted_subjects(spec, frame["subject"].astype(str).to_numpy())
        return int(frame.loc[mask, "subject"].nunique())

    def evaluate(self, job: NodeJobView) -> DecisionCreate:
        """Evaluate a job against the node's policy (and budget left, and cohort if data known)."""
        try:
            spec = parse_job_spec(job.spec)
        except JobSpecError as exc:
            return DecisionCreate(
                outcome="reject",
                source="policy",
                reasons=[DecisionReason(code="invalid_spec", message=bounded_reason(str(exc)))],
            )
        held = self.config.domains
        if held is not None and spec.link is None and spec.domain not in held:
            message = f"this node holds no {spec.domain} (it holds: {', '.join(held)})"
            return DecisionCreate(
                outcome="reject",
                source="policy",
                reasons=[DecisionReason(code="domain_not_held", message=message)],
            )
        cohort = self._cohort(spec)
        decision = self.point.review(spec, job.id, cohort_size=cohort)
        reasons = [
            DecisionReason(code=r.code, message=bounded_reason(r.message)) for r in decision.reasons
        ]
        if cohort is not None and decision.outcome != "deny":
            # what the job would use here, for the admins who decide (a count, no data)
            reasons.append(
                DecisionReason(
                    code="subjects_after_consent",
                    message=f"{cohort} subjects after consent filtering",
                )
            )
        outcome = {"allow": "approve", "deny": "reject", "needs_approval": "needs_approval"}[
            decision.outcome
        ]
        return DecisionCreate(outcome=outcome, source="policy", reasons=reasons)  # type: ignore[arg-type]

    def recover(self) -> list[str]:
        """Release the reservations of jobs the coordinator no longer runs (on (re)start).

        A node that died mid-job comes back to find the job ended (or unknown): what the
        job reserved and did not charge goes back to the budget. Reservations of jobs still
        open at the coordinator are kept.

        Returns:
            The job ids whose reservations were released.

        Raises:
            NodeServiceError, httpx.HTTPError: the coordinator cannot be asked.
        """
        open_jobs = {j.id for j in self.link.jobs() if j.state not in TERMINAL_STATES}
        released = self.point.budget().recover(active_job_ids=open_jobs, at=self.point.clock())
        for rel in released:
            log.info("job %s: reservation released on recovery", rel.job_id)
        return [rel.job_id for rel in released]

    def _accept(self, job: NodeJobView, decision: DecisionCreate, approved: bool) -> DecisionCreate:
        """Reserve the job's budget before an approval is posted; a refusal becomes a reject."""
        if decision.outcome != "approve":
            return decision
        try:
            self.point.accept(parse_job_spec(job.spec), job.id, approved=approved)
        except JobRefused as exc:
            return DecisionCreate(
                outcome="reject",
                source="policy",
                reasons=[DecisionReason(code=c, message=bounded_reason(m)) for c, m in exc.reasons],
            )
        return decision

    def _post(
        self, job: NodeJobView, decision: DecisionCreate, link: CoordinatorLink | None = None
    ) -> bool:
        """Post a decision (through ``link``, else the service's); return True.

        Undoes the reservation if the coordinator refuses it.
        """
        try:
            (link or self.link).decide(job.id, decision)
        except NodeServiceError:
            if decision.outcome == "approve":
                self.point.release(job.id, "the coordinator refused the approval")
            raise
        return True

    def poll_once(self) -> dict[str, str]:
        """Publish caps, decide new jobs, release reservations of ended jobs.

        An approval reserves the job's whole (ε, δ) in the node's budget first
        (:meth:`EnforcementPoint.accept`); a job the budget cannot cover is rejected with
        that reason. The first poll after a start also releases reservations of jobs that
        ended while the node was away (:meth:`recover`).

        Returns:
            What was done per job id (``approve``, ``reject``, ``needs_approval``, ``released``).
        """
        self.link.publish(self.registration())
        done: dict[str, str] = {}
        if not self._recovered:
            done.update(dict.fromkeys(self.recover(), "released"))
            self._recovered = True
        for job in self.link.jobs(include_finished=True):
            if job.state in TERMINAL_STATES:
                held = self.point.budget().reservation(job.id)
                if held is not None and held.status == "active":
                    self.point.release(
                        job.id,
                        f"job {job.state} at the coordinator",
                        failed=job.state != "succeeded",
                    )
                    done[job.id] = "released"
                continue
            if job.approval.status != "pending" or job.state != "awaiting_approval":
                continue
            decision = self._accept(job, self.evaluate(job), approved=False)
            try:
                self._post(job, decision)
            except NodeServiceError as exc:  # the job moved on meanwhile (e.g. cancelled)
                log.info("job %s: %s", job.id, exc)
                continue
            done[job.id] = decision.outcome
            log.info("job %s (%s): %s by policy", job.id, job.name, decision.outcome)
        self.link.publish_audit(self.point)
        return done

    def serve(self, stop: threading.Event, tick: Callable[[], object] | None = None) -> None:
        """Poll until ``stop`` is set; a failed poll is logged and retried next interval.

        ``tick`` runs before every poll (e.g. restarting a SuperNode that died). The
        service's heartbeat (:mod:`nodes.health`) is written before and after every poll,
        and once more, ``stopped``, when it ends.
        """
        while not stop.is_set():
            if tick is not None:
                tick()
            self._heartbeat("polling")
            try:
                self.poll_once()
                self.last_poll_error = None
            except (httpx.HTTPError, NodeServiceError) as exc:
                self.last_poll_error = bounded_reason(str(exc), 500)
                log.warning("poll failed: %s", exc)
            self.last_poll_at = datetime.now(UTC)
            self._heartbeat("idle")
            stop.wait(self.config.poll_interval)
        self._heartbeat("stopped")

    def _heartbeat(self, state: str) -> None:
        """Write the service's status file for ``hamanasu node health`` (failures logged)."""
        from nodes.health import write_status

        try:
            write_status(
                self.config.status_file,
                state=state,
                last_poll_at=self.last_poll_at,
                last_poll_error=self.last_poll_error,
                supernode=self.supernode_status() if self.supernode_status else None,
            )
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc.strerror)

    # -- the admin's actions -----------------------------------------------------------------
    def waiting(self) -> list[NodeJobView]:
        """Return the jobs that wait for this node's decision (pending or needing the admin)."""
        return [
            j
            for j in self.link.jobs()
            if j.approval.status in ("pending", "needs_approval") and j.state == "awaiting_approval"
        ]

    def _job(self, job_id: str) -> NodeJobView:
        for job in self.link.jobs():
            if job.id == job_id:
                return job
        raise NodeServiceError(f"job: no open job {job_id!r} targets node {self.config.name}")

    def approve(self, job_id: str, reason: str | None = None) -> DecisionCreate:
        """Approve a job as the node admin; the policy must not deny it.

        Raises:
            NodeServiceError: no such open job, the policy denies it or the budget cannot
                cover it (with the reasons; nothing is reserved or posted).
        """
        job = self._job(job_id)
        decision = self.evaluate(job)
        if decision.outcome == "reject":
            text = "; ".join(f"{r.code}: {r.message}" for r in decision.reasons)
            raise NodeServiceError(
                f"job {job_id}: the node policy denies it ({text}); an admin cannot override"
            )
        reasons = [DecisionReason(code="admin_approved", message=reason)] if reason else []
        out = self._accept(
            job, DecisionCreate(outcome="approve", source="admin", reasons=reasons), approved=True
        )
        if out.outcome == "reject":
            text = "; ".join(f"{r.code}: {r.message}" for r in out.reasons)
            raise NodeServiceError(f"job {job_id}: the node cannot take it ({text})")
        self._post(job, out, self.admin_link)
        return out

    def reject(self, job_id: str, reason: str) -> DecisionCreate:
        """Reject a job as the node admin, with a reason.

        Raises:
            NodeServiceError: no reason, or no such open job.
        """
        if not reason.strip():
            raise NodeServiceError("--reason: a rejection needs a reason")
        self._job(job_id)
        out = DecisionCreate(
            outcome="reject",
            source="admin",
            reasons=[DecisionReason(code="admin_rejected", message=bounded_reason(reason))],
        )
        self.admin_link.decide(job_id, out)
        return out

    # -- release review (output checking) -------------------------------------------------------
    def held(self) -> list[ReleaseView]:
        """Return the results that wait for this node's release review."""
        return self.admin_link.releases(status="held")

    def review_result(self, job_id: str, decision: str, reason: str | None = None) -> ReleaseView:
        """Release or withhold a held result as this admin, and record it in the node's ledger.

        The ledger entry (``result.released`` / ``result.withheld``) holds the job id, the
        reviewer's principal id (never a name or e-mail), the decision, the reason and the
        SHA-256 of the result the coordinator holds. It is validated before the decision is
        posted, so a decision the ledger would refuse is never sent.

        Raises:
            NodeServiceError: no such held result, a withhold without a reason, a reason the
                ledger refuses (e.g. an e-mail address), or the coordinator's refusal (another
                node, the same reviewer twice, already decided).
        """
        from consent.entries import normalise_payload
        from consent.errors import LedgerError

        if decision not in ("release", "withhold"):
            raise NodeServiceError(f"decision: {decision!r} is not release or withhold")
        reason = (reason or "").strip() or None
        if decision == "withhold" and reason is None:
            raise NodeServiceError("--reason: a withheld result needs a reason")
        view = next((v for v in self.held() if v.job_id == job_id), None)
        if view is None:
            raise NodeServiceError(
                f"job: no result of job {job_id!r} waits for node {self.config.name}'s review"
            )
        kind = "result.released" if decision == "release" else "result.withheld"
        reviewer = str(self.admin_link.me().get("id", ""))

        def payload(result_hash: str) -> dict[str, Any]:
            return {
                "job_id": job_id,
                "reviewer": reviewer,
                "decision": decision,
                "reason": reason,
                "result_hash": result_hash,
            }

        try:
            normalise_payload(kind, payload(view.result_hash))
        except LedgerError as exc:
            raise NodeServiceError(f"ledger refuses the entry: {exc}") from None
        choice = ReleaseDecisionCreate(decision=decision, reason=reason)  # type: ignore[arg-type]
        out = self.admin_link.release(job_id, choice)
        self.point.ledger().append(kind, payload(out.result_hash), self.point.clock())
        log.info(
            "job %s: result %s by reviewer %s (%s)",
            job_id,
            kind.split(".")[1],
            reviewer,
            out.status,
        )
        return out


def install_stop_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (graceful stop after the current poll)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
