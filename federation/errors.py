"""Errors raised by the federation layer: one base class, specific subclasses.

``bounded_reason`` keeps a failure reason whole up to :data:`MAX_REASON` characters and
says so when it has to cut one.
"""

from __future__ import annotations

#: Longest failure reason kept whole (a job's reason, a node's decision message).
MAX_REASON = 4000


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


def bounded_reason(text: str, limit: int = MAX_REASON) -> str:
    """Return a failure reason whole, or cut at a clause boundary with a note saying so.

    A reason within ``limit`` characters comes back unchanged (stripped). A longer one
    keeps its clauses (``; `` or ``. `` separated) that fit, else its words, and ends
    with ``… [N more characters cut]`` so no reader takes the part for the whole.

    Returns:
        The reason, at most ``limit`` characters long.

    Raises:
        ValueError: ``limit`` is too small to hold the note.
    """
    text = text.strip()
    if len(text) <= limit:
        return text
    room = limit - 40  # the note below takes at most 40 characters
    if room < 20:
        raise ValueError(f"limit: {limit} is too small for a cut reason")
    head = text[:room]
    cut = max(head.rfind("; "), head.rfind(". "))
    if cut < room // 2:
        cut = head.rfind(" ")
    kept = (head[:cut] if cut > 0 else head).rstrip(" ;,.")
    return f"{kept} … [{len(text) - len(kept)} more characters cut]"
