"""The privacy-budget arithmetic: periods, admission, per-job composition, closing a job.

Pure functions over the ledger's records; :mod:`policies.budget_store` reads the records
from SQLite, calls these, and writes back what they return.

How a job uses the budget
-------------------------
1. At acceptance the node **reserves** the job's whole DP target (ε_j, δ_j) in the job's
   domain, in the budget period containing the reservation time (calendar year or month
   in the time zone of the ``at`` given, or ``total``). A reservation that does not fit is
   refused with :class:`~policies.errors.BudgetExceeded` and changes nothing.
2. Every round it **charges** the mechanism that actually ran (DP-SGD steps, a Gaussian or
   Laplace release, or a pure (ε, δ) pair). The job's own charges are composed with the
   privacy-loss-distribution accountant (:func:`policies.accounting.compose_epsilon`, the
   one nodes report and calibrate with) at δ_j; a charge that would take the job's
   composed ε above ε_j is refused. Charges are idempotent on (job_id, round).
3. When the job ends (finished, failed, cancelled, or gone after a restart) it is
   **released**: the reservation stops counting and the job's charged mechanisms join the
   period's *closed* spending.

How reservations and composition combine
----------------------------------------
For a domain and period with budget (E, D) let C be the released (closed) jobs that
charged anything and A the active reservations. The ledger keeps

* ``closed_delta`` = Σ_{k∈C} δ_k (δ is spent additively per job: basic composition);
* ``closed_epsilon``: a running upper bound on the privacy loss of all mechanisms of C at
  ``closed_delta``. When job j closes it becomes the minimum of two valid bounds:
  ``closed_epsilon + used_j`` (basic composition of the old bound with the job's own
  PLD-composed ε at δ_j: each job charged tightly, jobs composed basically), and the RDP
  composition of *every* mechanism of C ∪ {j} (the stored curves) converted once at
  ``closed_delta + δ_j``, tighter once many jobs have closed. So the closed spending is
  never looser than adding jobs up and never grows by more than the job's own used ε.

An active job's mechanisms are covered by its reservation (its own composition never
exceeds ε_j, so post-processing bounds whatever it has done and will do by (ε_j, δ_j)).
Hence::

    committed_epsilon = closed_epsilon + Σ_{j∈A} ε_j
    committed_delta   = closed_delta   + Σ_{j∈A} δ_j
    remaining         = (E - committed_epsilon, D - committed_delta)

Combining the closed bound and the active reservations by basic composition is valid, and
a reservation is admitted only when ``fsum(closed_epsilon, ε_A..., ε_new) <= E`` and the
same for δ, so spent + reserved never exceeds the budget, and releasing a job never raises
``committed`` (its contribution drops from ε_j to at most used_j <= ε_j). The ε *spent*
(closed and active charges, composed the same way) is informational, and ``remaining``
never depends on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from policies.accounting import Composition, compose_epsilon
from policies.budget_records import BudgetStatus
from policies.errors import BudgetError, BudgetExceeded
from policies.model import BudgetPeriod, BudgetRule

__all__ = [
    "ActiveJob",
    "ClosedSpending",
    "admit",
    "budget_status",
    "charge_job",
    "close_job",
    "period_key",
    "require_aware",
]


@dataclass(frozen=True)
class ClosedSpending:
    """What the released jobs of one domain and period spent, composed.

    Attributes:
        epsilon: the running upper bound on their privacy loss at ``delta``.
        delta: the sum of their δ.
        composition: all their mechanisms, composed.
        jobs: how many released jobs charged anything.
    """

    epsilon: float = 0.0
    delta: float = 0.0
    composition: Composition = field(default_factory=Composition)
    jobs: int = 0


@dataclass(frozen=True)
class ActiveJob:
    """An active reservation's accounting.

    Attributes:
        job_id: the job.
        epsilon: ε reserved; ``delta`` δ reserved.
        composition: the job's charged mechanisms, composed.
        used_epsilon: that composition's ε at ``delta``.
        charges: how many rounds were charged.
    """

    job_id: str
    epsilon: float
    delta: float
    composition: Composition
    used_epsilon: float
    charges: int


def require_aware(at: datetime | None, name: str = "at") -> datetime:
    """Return ``at`` (now, in UTC, when None) after checking it is timezone-aware.

    Raises:
        BudgetError: ``at`` is not a datetime, or is naive (field ``name``).
    """
    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime):
        raise BudgetError(name, f"must be a datetime, not {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise BudgetError(name, "must be timezone-aware (the budget period depends on it)")
    return at


def period_key(period: BudgetPeriod | str, at: datetime) -> str:
    """Return the key of the budget period containing ``at``.

    Args:
        period: ``year`` (calendar year), ``month`` (calendar month) or ``total``.
        at: a tz-aware time; the calendar of its own time zone is used.

    Returns:
        ``"2025"``, ``"2025-04"`` or ``"total"``.

    Raises:
        BudgetError: ``period`` is unknown or ``at`` is naive.

    """
    at = require_aware(at)
    if period == "year":
        return f"{at.year:04d}"
    if period == "month":
        return f"{at.year:04d}-{at.month:02d}"
    if period == "total":
        return "total"
    raise BudgetError("period", f"{period!r} is not one of 'year', 'month', 'total'")


def admit(
    domain: str,
    period: str,
    rule: BudgetRule,
    closed: ClosedSpending,
    active: Sequence[ActiveJob],
    epsilon: float,
    delta: float,
) -> tuple[float, float]:
    """Check that a new reservation of (``epsilon``, ``delta``) fits the period's budget.

    Returns:
        The domain's remaining (ε, δ) once the reservation is made.

    Raises:
        BudgetExceeded: it does not fit; names the domain, the amounts requested and left.
    """
    eps_parts = [closed.epsilon, *(a.epsilon for a in active)]
    delta_parts = [closed.delta, *(a.delta for a in active)]
    new_eps = math.fsum([*eps_parts, epsilon])
    new_delta = math.fsum([*delta_parts, delta])
    if new_eps > rule.epsilon or new_delta > rule.delta:
        left_eps = rule.epsilon - math.fsum(eps_parts)
        left_delta = rule.delta - math.fsum(delta_parts)
        field_name = "epsilon" if new_eps > rule.epsilon else "delta"
        raise BudgetExceeded(
            field_name,
            f"domain {domain!r} ({rule.period} {period}): requested epsilon {epsilon:.6g}, "
            f"delta {delta:.3g}; remaining epsilon {max(left_eps, 0.0):.6g}, "
            f"delta {max(left_delta, 0.0):.3g}",
            domain=domain,
            requested=epsilon,
            remaining=max(left_eps, 0.0),
            requested_delta=delta,
            remaining_delta=max(left_delta, 0.0),
        )
    return rule.epsilon - new_eps, rule.delta - new_delta


def budget_status(
    domain: str,
    period: str,
    rule: BudgetRule,
    closed: ClosedSpending,
    active: Sequence[ActiveJob],
) -> BudgetStatus:
    """Return one domain's budget row in one period from its closed and active spending.

    Returns:
        The :class:`~policies.budget_records.BudgetStatus`; ``spent_epsilon`` composes the
        closed bound with the active jobs' charges both ways and keeps the tighter.
    """
    reserved_eps = math.fsum(a.epsilon for a in active)
    charged = [a for a in active if a.charges > 0]
    basic = closed.epsilon + math.fsum(a.used_epsilon for a in charged)
    comp = closed.composition
    for a in charged:
        comp = comp + a.composition
    spent_delta = closed.delta + math.fsum(a.delta for a in charged)
    spent = min(basic, comp.epsilon(spent_delta)) if charged else closed.epsilon
    committed = math.fsum([closed.epsilon, *(a.epsilon for a in active)])
    return BudgetStatus(
        domain=domain,
        period=period,
        budget_epsilon=rule.epsilon,
        budget_delta=rule.delta,
        closed_epsilon=closed.epsilon,
        reserved_epsilon=reserved_eps,
        spent_epsilon=spent,
        committed_epsilon=committed,
        remaining_epsilon=rule.epsilon - committed,
        remaining_delta=rule.delta - math.fsum([closed.delta, *(a.delta for a in active)]),
        active_jobs=len(active),
        closed_jobs=closed.jobs,
    )


def charge_job(
    job: ActiveJob,
    step: Composition,
    ran: Sequence[Mapping[str, Any]],
    domain: str,
    round_no: int,
) -> ActiveJob:
    """Compose one round's mechanism into an active job's charges.

    Args:
        job: the active job before this round.
        step: the round's RDP curve (kept for composing across jobs).
        ran: every mechanism the job has run, this round's included; their PLD
            composition (:func:`policies.accounting.compose_epsilon`) is the job's used ε.
        domain: the job's domain (for the refusal).
        round_no: the round (for the refusal).

    Returns:
        The job with ``step`` composed in, its used ε and charge count updated.

    Raises:
        BudgetExceeded: the job's composed ε at its δ would exceed the ε it reserved.
    """
    after = job.composition + step
    used = compose_epsilon(ran, job.delta)
    if not used <= job.epsilon:
        raise BudgetExceeded(
            "mechanism",
            f"job {job.job_id!r} round {round_no}: the composed epsilon would reach "
            f"{used:.6g} at delta {job.delta:.3g}, above the {job.epsilon:.6g} reserved "
            f"({job.epsilon - job.used_epsilon:.6g} left before this round)",
            domain=domain,
            requested=used - job.used_epsilon if math.isfinite(used) else math.inf,
            remaining=job.epsilon - job.used_epsilon,
            requested_delta=job.delta,
            remaining_delta=job.delta,
        )
    return ActiveJob(
        job_id=job.job_id,
        epsilon=job.epsilon,
        delta=job.delta,
        composition=after,
        used_epsilon=used,
        charges=job.charges + 1,
    )


def close_job(closed: ClosedSpending, job: ActiveJob) -> ClosedSpending:
    """Add a released job that charged something to the period's closed spending.

    Returns:
        The new closed spending: its ε the tighter of the two valid bounds (the old bound
        plus the job's used ε, or every closed mechanism composed at the new δ).
    """
    comp = closed.composition + job.composition
    new_delta = closed.delta + job.delta
    return ClosedSpending(
        epsilon=min(closed.epsilon + job.used_epsilon, comp.epsilon(new_delta)),
        delta=new_delta,
        composition=comp,
        jobs=closed.jobs + 1,
    )
