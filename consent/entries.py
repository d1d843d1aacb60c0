"""Ledger entry kinds, their payload models, and the refusal of direct identifiers.

Payloads of the kinds below are validated (and normalised) before they are written;
other kinds must be dotted lower-case names and are only checked for identifiers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consent.duo import normalise_code
from consent.errors import IdentifierInPayloadError, LedgerError
from consent.model import PSEUDONYM_PATTERN, Purpose, UseRequest

__all__ = [
    "BUDGET_KINDS",
    "CONSENT_KINDS",
    "FORBIDDEN_KEYS",
    "KIND_PATTERN",
    "RESULT_REVIEW_KINDS",
    "BudgetPayload",
    "ConsentEventPayload",
    "JobUsagePayload",
    "ResultReviewPayload",
    "check_no_identifiers",
    "normalise_payload",
]

CONSENT_KINDS = ("consent.granted", "consent.changed", "consent.withdrawn")
BUDGET_KINDS = ("budget.reserved", "budget.charged", "budget.released")
#: A node admin's output-checking decision on a job's result (issue 8's release review).
RESULT_REVIEW_KINDS = ("result.released", "result.withheld")
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
#: Payload keys (lower-cased, without ``_``/``-``/spaces) that name direct identifiers.
FORBIDDEN_KEYS = frozenset(
    {
        "name",
        "firstname",
        "lastname",
        "givenname",
        "familyname",
        "fullname",
        "patientname",
        "address",
        "streetaddress",
        "street",
        "postcode",
        "postalcode",
        "zip",
        "zipcode",
        "birthdate",
        "dateofbirth",
        "dob",
        "birthday",
        "phone",
        "phonenumber",
        "telephone",
        "tel",
        "mobile",
        "email",
        "emailaddress",
        "mail",
        "ssn",
        "mynumber",
        "insurancenumber",
        "passport",
        "passportnumber",
        "ipaddress",
    }
)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_HEX64 = r"^[0-9a-f]{64}$"


def check_no_identifiers(payload: Any, path: str = "payload") -> None:
    """Refuse payloads that carry direct identifiers.

    Raises:
        IdentifierInPayloadError: a key names a direct identifier, or a value looks like
            an e-mail address (the message names the key, never the value).

    """
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            if not isinstance(key, str):
                raise LedgerError(f"{path}: keys must be strings")
            if _is_identifier_key(key):
                raise IdentifierInPayloadError(
                    f"{path}.{key}: direct identifiers may not be written to the ledger"
                )
            check_no_identifiers(value, f"{path}.{key}")
    elif isinstance(payload, list | tuple):
        for i, value in enumerate(payload):
            check_no_identifiers(value, f"{path}[{i}]")
    elif isinstance(payload, str) and "@" in payload and _EMAIL.search(payload):
        raise IdentifierInPayloadError(f"{path}: looks like an e-mail address")
    elif isinstance(payload, float) and not math.isfinite(payload):
        raise LedgerError(f"{path}: must be a finite number")


@lru_cache(maxsize=8192)
def _is_identifier_key(key: str) -> bool:
    return re.sub(r"[^a-z0-9]", "", key.lower()) in FORBIDDEN_KEYS


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ConsentEventPayload(_Payload):
    """``consent.granted`` / ``consent.changed`` / ``consent.withdrawn``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(pattern=PSEUDONYM_PATTERN)
    consent_id: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1)
    status: str
    decision: str
    recorded_at: datetime
    content_hash: str = Field(pattern=_HEX64)


class JobUsagePayload(_Payload):
    """``job.usage``: which job used how many subjects' data, for what, at what ε, δ.

    ``purpose`` holds the job's DUO codes; with ``disease``, ``commercial``,
    ``requester_type`` and ``domain`` it rebuilds the use request an auditor re-checks.
    """

    job_id: str = Field(min_length=1, max_length=128)
    round: int = Field(ge=0)
    purpose: tuple[str, ...] = Field(min_length=1)
    disease: str | None = None
    commercial: bool = False
    requester: str = Field(min_length=1, max_length=128)
    requester_type: str = "academic"
    domain: str | None = None
    n_subjects: int = Field(ge=0)
    subject_commitment: str = Field(pattern=_HEX64)
    epsilon: float = Field(ge=0, allow_inf_nan=False)
    delta: float = Field(ge=0, lt=1, allow_inf_nan=False)

    @field_validator("purpose", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [v for v in value.replace(",", ";").split(";") if v.strip()]
        return tuple(normalise_code(v) for v in value)

    def to_request(self, time: datetime) -> UseRequest:
        """Return the use request this usage stood for, at ``time``."""
        purpose = Purpose(
            codes=self.purpose,
            disease=self.disease,
            commercial=self.commercial,
            requester_type=self.requester_type,
            requester_org=self.requester,
        )
        return UseRequest.for_purpose(purpose, time=time, domain=self.domain)


class BudgetPayload(_Payload):
    """``budget.reserved`` / ``budget.charged`` / ``budget.released``."""

    job_id: str | None = Field(default=None, max_length=128)
    epsilon: float = Field(ge=0, allow_inf_nan=False)
    delta: float = Field(default=0.0, ge=0, lt=1, allow_inf_nan=False)


class ResultReviewPayload(_Payload):
    """``result.released`` / ``result.withheld``: a node admin's release review of a result.

    Who (a principal id, never a name) released or withheld which job's result (its
    SHA-256), and why.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(min_length=1, max_length=128)
    reviewer: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    decision: Literal["release", "withhold"]
    reason: str | None = Field(default=None, max_length=2000)
    result_hash: str = Field(pattern=_HEX64)

    @model_validator(mode="after")
    def _withhold_has_reason(self) -> ResultReviewPayload:
        if self.decision == "withhold" and not (self.reason or "").strip():
            raise ValueError("reason: a withheld result needs a reason")
        return self


_MODELS: dict[str, type[_Payload]] = {
    **dict.fromkeys(CONSENT_KINDS, ConsentEventPayload),
    "job.usage": JobUsagePayload,
    **dict.fromkeys(BUDGET_KINDS, BudgetPayload),
    **dict.fromkeys(RESULT_REVIEW_KINDS, ResultReviewPayload),
}


def normalise_payload(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a payload for ``kind`` and return its JSON-ready normal form.

    Raises:
        LedgerError: the kind name is malformed or the payload is invalid for it.
        IdentifierInPayloadError: the payload carries a direct identifier.

    """
    if not KIND_PATTERN.match(kind):
        raise LedgerError(f"kind {kind!r} must be a dotted lower-case name like job.usage")
    if not isinstance(payload, Mapping):
        raise LedgerError("payload must be a mapping")
    check_no_identifiers(payload)
    model = _MODELS.get(kind)
    if model is None:
        return dict(payload)
    try:
        out = model.model_validate(dict(payload)).model_dump(mode="json")
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise LedgerError(f"{kind} payload.{where}: {err['msg']}") from None
    expected = {"result.released": "release", "result.withheld": "withhold"}.get(kind)
    if expected is not None and out["decision"] != expected:
        raise LedgerError(f"{kind} payload.decision: must be {expected!r}")
    return out
