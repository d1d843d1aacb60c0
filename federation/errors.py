"""Errors raised by the federation layer: one base class, specific subclasses."""

from __future__ import annotations


class FederationError(Exception):
    """Base class of every error the federation layer raises."""


class JobSpecError(FederationError, ValueError):
    """A job spec is malformed; the message names the field (``privacy.epsilon: ...``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class SecureAggregationError(FederationError):
    """Secure aggregation could not complete a round (after its retries)."""


class ValueRangeError(SecureAggregationError, ValueError):
    """A value to be securely summed lies outside the range SecAgg+ can carry."""


class RegistryError(FederationError, KeyError):
    """A registry lookup failed, or a registration would overwrite an entry."""


class AuditCheckError(FederationError, ValueError):
    """A check of a node's ledger failed.

    Attributes:
        message: what failed, naming the entry or size concerned (safe to show).
        index: the first ledger entry concerned, if one is known.
        rewrite: True when it shows the node altered history it had signed (the node is
            flagged), False for other failures (a bad signature, an unknown key).
    """

    def __init__(self, message: str, *, index: int | None = None, rewrite: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.rewrite = rewrite
