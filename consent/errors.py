"""The consent package's error vocabulary: one base class, specific subclasses.

Every error is a ``ValueError`` so callers that only care about "bad input" can catch
that; messages name the field, entry or index and never carry key material.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ConsentError",
    "ConsentImportError",
    "ConsentValidationError",
    "IdentifierInPayloadError",
    "ImportProblem",
    "KeyFileError",
    "LedgerError",
    "LedgerUnreadableError",
    "LedgerVerificationError",
    "ProofError",
    "SignatureError",
    "UsageAuditError",
]


class ConsentError(ValueError):
    """Base class of every error raised by the consent package."""


class ConsentValidationError(ConsentError):
    """A consent record or a use request is malformed (the message names the field)."""


class ImportProblem(BaseModel):
    """One bad entry of an import file.

    Attributes:
        location: ``line 7`` for CSV, ``entry[3]`` for a FHIR Bundle, ``resource`` for one
            resource.
        field: the column or FHIR element that is wrong (dotted path).
        reason: what is wrong with it.

    """

    model_config = ConfigDict(frozen=True)

    location: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.field}: {self.reason}"


class ConsentImportError(ConsentError):
    """An import file was rejected as a whole; ``problems`` lists every bad entry."""

    def __init__(self, source: str, problems: Sequence[ImportProblem]) -> None:
        self.source = source
        self.problems: tuple[ImportProblem, ...] = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:20])
        more = f" (and {len(self.problems) - 20} more)" if len(self.problems) > 20 else ""
        super().__init__(
            f"{source}: {len(self.problems)} bad entr{'y' if len(self.problems) == 1 else 'ies'}, "
            f"nothing imported: {shown}{more}"
        )


class LedgerError(ConsentError):
    """The ledger cannot do what was asked (bad entry kind, closed store, ...)."""


class IdentifierInPayloadError(LedgerError):
    """A ledger payload carries a direct identifier (name, address, birth date, ...)."""


class LedgerVerificationError(ConsentError):
    """A ledger failed verification.

    Attributes:
        index: the first entry index that is proven bad (or the lower end of the range in
            which the first bad entry lies, when only a signed root can tell).
        last_index: the upper end of that range (equal to ``index`` when exact).
        reason: what did not hold.

    """

    def __init__(self, index: int | None, reason: str, last_index: int | None = None) -> None:
        self.index = index
        self.last_index = index if last_index is None else last_index
        self.reason = reason
        if index is None:
            where = "ledger"
        elif self.last_index == index:
            where = f"entry {index}"
        else:
            where = f"entries {index}..{self.last_index}"
        super().__init__(f"{where}: {reason}")


class LedgerUnreadableError(LedgerVerificationError):
    """A ledger file cannot be read as a ledger at all.

    It is missing, not SQLite, damaged, or lacks a table or column the format has; its
    entries could not be examined, so nothing was verified (as opposed to a ledger that
    was read and found not to hold).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)


class ProofError(LedgerVerificationError):
    """An inclusion or consistency proof does not verify."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)


class SignatureError(ConsentError):
    """A signed tree head's signature does not verify (reported opaquely)."""


class KeyFileError(ConsentError):
    """A key file is missing, unreadable, of the wrong type, or too widely readable."""


class UsageAuditError(ConsentError):
    """A job's disclosed subjects do not match its ledger entries or lacked consent.

    Attributes:
        report: the full ``consent.usage.UsageReport``.

    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
