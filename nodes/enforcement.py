"""The node's enforcement point: the one place every job round passes before data are read.

Order, for every round: policy check → consent filter for this purpose at this moment
(a withdrawal counts from the next round on) → minimum-cohort check → budget charge and
usage entry (one logical operation) → only then do the rows reach training or
statistics. A refusal raises :class:`JobRefused` carrying machine-readable reasons; it
travels to the coordinator as a reason, never as data.

The object holds only paths, so it can be pickled into Flower's simulation workers;
each process opens the node's databases lazily (they are safe across processes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nodes.node_state import NodeState

if TYPE_CHECKING:
    from federation.spec import JobSpec
    from nodes.client_app import RoundUse
    from policies import PolicyDecision

__all__ = ["EnforcementPoint", "JobRefused", "failed_job_reason"]

#: Longest reason the budget ledger records for a release.
MAX_REASON = 500


class JobRefused(Exception):
    """A node refused a job or a round; ``reasons`` are (code, message) pairs."""

    def __init__(self, node: str, reasons: list[tuple[str, str]]) -> None:
        self.node = node
        self.reasons = reasons
        text = "; ".join(f"{code}: {message}" for code, message in reasons)
        super().__init__(f"node {node} refused: {text}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def failed_job_reason(reason: str, charged_rounds: list[int]) -> str:
    """Return the release reason of a failed job: why its charged rounds stay charged.

    A round is charged only once its usage entry is written, just before the node
    trains; its noised update then leaves the node inside SecAgg+, and when other nodes
    drop out the coordinator may unmask the survivors' sum, which with one survivor is
    that node's update. The privacy cost was incurred whether or not the job went on to
    produce a result, so the charge stands and the reason says so; only the unused
    rest of the reservation returns to the budget.

    Returns:
        At most :data:`MAX_REASON` characters, the caller's reason shortened first.
    """
    rounds = sorted(set(charged_rounds))
    if not rounds:
        note = "; no round was charged here"
    else:
        shown = ", ".join(map(str, rounds[:8])) + (
            f" and {len(rounds) - 8} more" if len(rounds) > 8 else ""
        )
        note = (
            f"; round(s) {shown} stay charged: each charged round's noised update left this "
            "node inside SecAgg+ before the job failed, so its privacy cost was incurred "
            "even though the job produced no result"
        )
    head = reason.strip()[: max(MAX_REASON - len(note), 1)]
    return (head + note)[:MAX_REASON]


class _UsageAndCharge:
    """Adapter handed to the budget ledger: a charge and its usage entry land in one append."""

    def __init__(self, ledger: Any, usage: Mapping[str, Any] | None) -> None:
        self.ledger, self.usage = ledger, usage

    def append(self, kind: str, payload: Mapping[str, Any], at: datetime | None = None) -> int:
        if kind == "budget.charged" and self.usage is not None:
            return int(
                self.ledger.append_many([("job.usage", self.usage, at), (kind, payload, at)])[-1]
            )
        return int(self.ledger.append(kind, payload, at))


class EnforcementPoint:
    """One node's gate: policy, consent, cohort, budget and ledger, in that order.

    Args:
        node: the node's name.
        state_dir: the node's state folder (see :class:`NodeState`).
        clock: returns "now" (tests move time between rounds).
    """

    def __init__(
        self, node: str, state_dir: Path, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self.node = node
        self.state = NodeState(Path(state_dir))
        self.clock = clock
        self._open: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"node": self.node, "state": self.state, "clock": self.clock, "_open": {}}

    # -- resources, opened once per process ---------------------------------------------
    def policy(self) -> Any:
        """Return the node policy in force (re-read when the file changes)."""
        from policies import load_policy

        mtime = self.state.policy_path.stat().st_mtime_ns
        cached = self._open.get("policy")
        if cached is None or cached[0] != mtime:
            self._open["policy"] = (mtime, load_policy(self.state.policy_path))
        return self._open["policy"][1]

    def ledger(self) -> Any:
        """Return the node's signed ledger."""
        if "ledger" not in self._open:
            from consent.ledger import Ledger
            from consent.signing import load_private_key

            key = load_private_key(self.state.key_path) if self.state.key_path.exists() else None
            self._open["ledger"] = Ledger(self.state.ledger_path, key)
        return self._open["ledger"]

    def budget(self, usage: Mapping[str, Any] | None = None) -> Any:
        """Return the budget ledger, writing its entries (and ``usage``) to the node ledger."""
        from policies import BudgetLedger

        adapter = _UsageAndCharge(self.ledger(), usage)
        if "budget" not in self._open:
            self._open["budget"] = BudgetLedger(
                self.state.budget_path, adapter, budgets=self.policy().budget
            )
        self._open["budget"].usage_ledger = adapter
        return self._open["budget"]

    def registry(self) -> Any:
        """Return the node's consent registry."""
        if "registry" not in self._open:
            from consent.registry import ConsentRegistry

            self._open["registry"] = ConsentRegistry(self.state.consents_path)
        return self._open["registry"]

    # -- decisions -------------------------------------------------------------------------
    def _use_request(self, job: JobSpec, at: datetime) -> Any:
        from consent.model import UseRequest

        p = job.purpose
        return UseRequest(
            codes=tuple(p.duo),
            disease=p.disease,
            commercial=p.commercial,
            requester_type=p.requester_type,
            requester_org=p.requester,
            domain=job.domain,
            time=at,
        )

    def permitted_subjects(
        self, job: JobSpec, subjects: np.ndarray, at: datetime | None = None
    ) -> np.ndarray:
        """Return a boolean mask: whose consent permits this job's purpose at ``at``."""
        at = at or self.clock()
        return np.asarray(
            self.registry().permitted(list(subjects), self._use_request(job, at), at), dtype=bool
        )

    def review(self, job: JobSpec, job_id: str, cohort_size: int | None = None) -> PolicyDecision:
        """Evaluate the job against the policy and the budget left (no side effects).

        A reservation the job already holds here counts as budget left for it.

        Returns:
            The :class:`policies.PolicyDecision` (allow, deny or needs_approval, every reason).
        """
        from policies import PolicyState, evaluate

        now = self.clock()
        budget = self.budget()
        remaining = budget.remaining_by_domain(now)
        held = budget.reservation(job_id)
        left = remaining.get(held.domain) if held is not None else None
        if held is not None and held.status == "active" and left and left.period == held.period:
            # The job's own reservation is its own: accepting it again (the embedded
            # engine does when the run starts) must not count it against itself.
            remaining[held.domain] = left.model_copy(
                update={"epsilon": left.epsilon + held.epsilon, "delta": left.delta + held.delta}
            )
        return evaluate(
            job.to_policy_request(job_id),
            self.policy(),
            PolicyState(now=now, remaining=remaining, cohort_size=cohort_size),
        )

    def accept(self, job: JobSpec, job_id: str, approved: bool = False) -> Any:
        """Accept a job here: re-check the policy, then reserve its whole (ε, δ).

        ``approved`` says the node admin approved a job that needs approval.

        Returns:
            The budget reservation, or None for a job without DP.

        Raises:
            JobRefused: the policy denies the job, it awaits approval, or the budget
                cannot cover it (nothing is reserved).
        """
        from policies import BudgetExceeded

        decision = self.review(job, job_id)
        if decision.outcome == "deny":
            raise JobRefused(self.node, [(r.code, r.message) for r in decision.reasons])
        if decision.outcome == "needs_approval" and not approved:
            raise JobRefused(
                self.node, [("awaiting_approval", "the node admin has not approved this job")]
            )
        if job.privacy is None:
            return None
        try:
            return self.budget().reserve(
                job_id, job.domain, job.privacy.epsilon, job.privacy.delta, self.clock()
            )
        except BudgetExceeded as exc:
            raise JobRefused(self.node, [("budget_exhausted", str(exc))]) from None

    def release(self, job_id: str, reason: str, *, failed: bool = False) -> None:
        """Release what a job did not use of its reservation (it ended, failed or was cancelled).

        When the job ``failed``, the ``budget.released`` ledger entry also says which of
        this node's rounds stay charged and why (see :func:`failed_job_reason`).
        """
        budget = self.budget()
        if budget.reservation(job_id) is None:
            return
        if failed:
            reason = failed_job_reason(reason, [c.round for c in budget.charges(job_id)])
        budget.release(job_id, reason, self.clock())

    # -- the RoundGate protocol ------------------------------------------------------------
    def select(self, job: JobSpec, job_id: str, round_no: int, frame: pd.DataFrame) -> pd.DataFrame:
        """Return the rows this round may use: policy, then consent now, then minimum cohort.

        Raises:
            JobRefused: the policy now denies the job, the job holds no reservation here,
                or fewer subjects than the policy's minimum remain after consent filtering.
        """
        from policies import BudgetRemaining, PolicyState, evaluate

        now = self.clock()
        policy = self.policy()
        held = self.budget().reservation(job_id) if job.privacy else None
        if job.privacy is not None and held is None:
            raise JobRefused(
                self.node, [("not_accepted", f"job {job_id} holds no budget reservation here")]
            )
        remaining = (
            {job.domain: BudgetRemaining(epsilon=held.epsilon, delta=held.delta)} if held else {}
        )
        decision = evaluate(
            job.to_policy_request(job_id), policy, PolicyState(now=now, remaining=remaining)
        )
        if decision.outcome == "deny":
            raise JobRefused(self.node, [(r.code, r.message) for r in decision.reasons])
        if "subject" not in frame.columns:
            raise JobRefused(self.node, [("no_subject_key", "the data carry no subject pseudonym")])
        mask = self.permitted_subjects(job, frame["subject"].astype(str).to_numpy(), now)
        kept = frame.loc[mask]
        n_subjects = int(kept["subject"].nunique())
        if n_subjects < policy.min_cohort:
            raise JobRefused(
                self.node,
                [
                    (
                        "cohort_too_small",
                        f"{n_subjects} subjects remain after consent filtering; "
                        f"the policy needs {policy.min_cohort}",
                    )
                ],
            )
        return kept

    def commit(self, job: JobSpec, use: RoundUse) -> float | None:
        """Charge the round and append its usage entry, as one operation, before training.

        Returns:
            The job's composed ε charged here so far, this round included (a retried
            round: as after its one charge); None for a round with nothing to charge.

        Raises:
            JobRefused: the charge would exceed the job's reservation (nothing is charged).
        """
        from consent.ledger import subject_commitment
        from policies import BudgetExceeded

        subjects = sorted(set(use.subjects))
        self.state.record_subjects(use.job_id, use.round, subjects)
        usage = {
            "job_id": use.job_id,
            "round": use.round,
            "purpose": list(job.purpose.duo),
            "disease": job.purpose.disease,
            "commercial": job.purpose.commercial,
            "requester": job.purpose.requester,
            "requester_type": job.purpose.requester_type,
            "domain": job.domain,
            "n_subjects": len(subjects),
            "subject_commitment": subject_commitment(subjects, self.state.salt(use.job_id)),
            "epsilon": float(use.epsilon),
            "delta": float(use.delta),
        }
        if job.privacy is None or use.mechanism.get("type") == "none":
            self.ledger().append("job.usage", usage, self.clock())
            return None
        try:
            charge = self.budget(usage).charge(
                use.job_id, use.round, use.mechanism, use.epsilon, self.clock()
            )
        except BudgetExceeded as exc:
            raise JobRefused(self.node, [("budget_exhausted", str(exc))]) from None
        if charge.duplicate:
            # A retried round (its secure aggregation halted) reads the rows again under
            # the round's one charge: that read is logged too, with no further spend.
            self.ledger().append("job.usage", {**usage, "epsilon": 0.0, "delta": 0.0}, self.clock())
        return float(charge.job_epsilon_spent)
