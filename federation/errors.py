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
