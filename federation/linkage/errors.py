"""Errors of cross-holder linkage: a refusal with its cause, a failed protocol step."""

from __future__ import annotations

from federation.errors import FederationError

__all__ = ["LINKAGE_REFUSAL_CAUSES", "LinkageError", "LinkageRefusal"]

#: Why a linked job was refused before anything was opened.
LINKAGE_REFUSAL_CAUSES = (
    "too_few_holders",
    "too_few_parties",
    "cohort_too_small",
    "columns_not_held",
    "linkage_not_allowed",
)


class LinkageError(FederationError):
    """A linkage step failed (a malformed message, a lost party, a failed check)."""


class LinkageRefusal(LinkageError):  # noqa: N818 (a refusal, not an error condition)
    """A linked job was refused; ``cause`` is one of :data:`LINKAGE_REFUSAL_CAUSES`."""

    def __init__(self, cause: str, detail: str) -> None:
        self.cause = cause
        self.detail = detail
        super().__init__(f"{cause}: {detail}")
