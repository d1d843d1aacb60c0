"""The privacy-budget ledger's records: reservations, charges, releases, a domain's budget row.

One model per thing the ledger holds; the node's admin API and the audit snapshot build
on :class:`BudgetStatus` rather than mirroring it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from policies.errors import BudgetError

__all__ = [
    "BudgetStatus",
    "Charge",
    "Release",
    "Reservation",
    "UsageLedger",
    "checked_amount",
    "checked_job_id",
]


class UsageLedger(Protocol):
    """What the budget ledger needs of the node's usage ledger (``consent.ledger.Ledger``)."""

    def append(self, kind: str, payload: Mapping[str, Any], at: datetime | None = None) -> int:
        """Append an entry; raise to veto the budget change."""
        ...


@dataclass(frozen=True)
class Reservation:
    """A job's reservation of its (ε, δ) target.

    Attributes:
        job_id: the job.
        domain: the domain whose budget is reserved.
        period: the budget period key (``2025``, ``2025-04``, ``total``).
        epsilon: ε reserved (the job's DP target).
        delta: δ reserved.
        reserved_at: when it was made.
        status: ``active`` or ``released``.
        used_epsilon: the job's own composed ε of its charges so far (at ``delta``).
        charges: number of rounds charged.
        remaining_epsilon: the domain's remaining ε right after the reservation.
        remaining_delta: the domain's remaining δ right after the reservation.
        released_at: when it was released (None while active).
        release_reason: why it was released; for a failed job, which of its rounds stay
            charged and why.

    """

    job_id: str
    domain: str
    period: str
    epsilon: float
    delta: float
    reserved_at: datetime
    status: str = "active"
    used_epsilon: float = 0.0
    charges: int = 0
    remaining_epsilon: float = math.nan
    remaining_delta: float = math.nan
    released_at: datetime | None = None
    release_reason: str | None = None


@dataclass(frozen=True)
class Charge:
    """One round's charge.

    Attributes:
        job_id: the job.
        round: the round number.
        domain: the domain charged.
        mechanism: the mechanism, canonical mapping.
        reported_epsilon: the ε the caller's own accountant attributed to the round, if given.
        job_epsilon_spent: the job's composed ε after this charge (at its δ).
        job_epsilon: the job's reserved ε.
        charged_at: when the charge was recorded.
        duplicate: True when this (job_id, round) was already charged and nothing changed.

    """

    job_id: str
    round: int
    domain: str
    mechanism: dict[str, Any]
    reported_epsilon: float | None
    job_epsilon_spent: float
    job_epsilon: float
    charged_at: datetime
    duplicate: bool = False


@dataclass(frozen=True)
class Release:
    """The end of a reservation.

    Attributes:
        job_id: the job.
        domain: the domain.
        reason: why it was released (``finished``, ``failed``, ``cancelled``, ...).
        reserved_epsilon: ε that was reserved.
        used_epsilon: the job's own composed ε of its charges.
        freed_epsilon: how much the domain's committed ε went down.
        released_at: when.
        duplicate: True when the job had already been released (nothing changed).

    """

    job_id: str
    domain: str
    reason: str
    reserved_epsilon: float
    used_epsilon: float
    freed_epsilon: float
    released_at: datetime
    duplicate: bool = False


@dataclass(frozen=True)
class BudgetStatus:
    """One domain's budget in one period (a row of ``hamanasu node budget show``).

    Attributes:
        domain: the domain.
        period: the period key.
        budget_epsilon: E.
        budget_delta: D.
        closed_epsilon: composed ε of released jobs' charges.
        reserved_epsilon: ε of active reservations.
        spent_epsilon: composed ε of every charge so far (closed and active jobs).
        committed_epsilon: ``closed_epsilon + reserved_epsilon``.
        remaining_epsilon: ``budget_epsilon - committed_epsilon``.
        remaining_delta: ``budget_delta`` minus closed and reserved δ.
        active_jobs: number of active reservations.
        closed_jobs: number of released jobs that charged anything.

    """

    domain: str
    period: str
    budget_epsilon: float
    budget_delta: float
    closed_epsilon: float
    reserved_epsilon: float
    spent_epsilon: float
    committed_epsilon: float
    remaining_epsilon: float
    remaining_delta: float
    active_jobs: int
    closed_jobs: int

    def as_dict(self) -> dict[str, Any]:
        """Return the row as a JSON-friendly mapping.

        Returns:
            Field names to values.

        """
        return dict(self.__dict__)


def checked_amount(name: str, value: float, *, low: float, high: float, low_open: bool) -> float:
    """Return ``value`` as a float within [low, high] (or (low, high]).

    Raises:
        BudgetError: it is not a finite number in range (field ``name``).
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise BudgetError(name, f"must be a number, not {value!r}") from None
    if not math.isfinite(value):
        raise BudgetError(name, "must be a finite number")
    if value < low or (low_open and value == low) or value > high:
        bracket = "(" if low_open else "["
        raise BudgetError(name, f"must lie in {bracket}{low}, {high}], got {value}")
    return value


def checked_job_id(job_id: str) -> str:
    """Return ``job_id`` after checking it.

    Raises:
        BudgetError: it is not a non-empty string of at most 256 characters.
    """
    if not isinstance(job_id, str) or not job_id or len(job_id) > 256:
        raise BudgetError("job_id", "must be a non-empty string of at most 256 characters")
    return job_id
