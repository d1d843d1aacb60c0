"""Errors raised by the policies package: one base class, specific subclasses.

Every error is a :class:`ValueError` (the caller asked for something the node's rules do
not permit, or handed in a malformed argument) and carries the offending ``field`` so an
API layer can map it to a 4xx response naming that field.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "BudgetExceeded",
    "MechanismError",
    "PolicyError",
    "ReservationNotFound",
    "UsageLedgerError",
]


class PolicyError(ValueError):
    """Base class of every error this package raises.

    Attributes:
        field: the policy field or argument at fault (``budget.births.epsilon``), if any.
        reason: the message without the field prefix.

    """

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class BudgetError(PolicyError):
    """A privacy-budget operation cannot be carried out (unknown domain, closed job, ...)."""


class BudgetExceeded(BudgetError):  # noqa: N818 - the name the issue asks for
    """A reservation or charge would exceed what the budget (or the job's reservation) allows.

    Attributes:
        domain: the data domain whose budget is concerned.
        requested: the ε asked for.
        remaining: the ε still available when the request was refused.
        requested_delta: the δ asked for.
        remaining_delta: the δ still available.

    """

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        domain: str,
        requested: float,
        remaining: float,
        requested_delta: float = 0.0,
        remaining_delta: float = 0.0,
    ) -> None:
        self.domain = domain
        self.requested = requested
        self.remaining = remaining
        self.requested_delta = requested_delta
        self.remaining_delta = remaining_delta
        super().__init__(field, reason)


class ReservationNotFound(BudgetError):  # noqa: N818 - reads as a sentence
    """A charge or release names a job that holds no reservation."""


class MechanismError(BudgetError):
    """A DP mechanism description is malformed; the message names the field."""


class UsageLedgerError(BudgetError):
    """Appending to the usage ledger failed, so the budget change was rolled back."""
