"""Consent records, provisions, use requests and decisions as pydantic models.

The shape follows HL7 FHIR R5 ``Consent``: a status, a base decision (``permit`` or
``deny``), an optional period, and nested provisions, each an exception to its parent.
Attributes within one provision are AND-ed, siblings are OR-ed. All times are
timezone-aware UTC (naive input is read as UTC).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any

import rfc8785
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from consent.duo import MODIFIERS, USE_CATEGORIES, normalise_code

__all__ = [
    "PSEUDONYM_PATTERN",
    "REQUESTER_TYPES",
    "Consent",
    "ConsentStatus",
    "Decision",
    "DecisionType",
    "Period",
    "Provision",
    "Purpose",
    "UseRequest",
    "utc",
]

#: What a subject pseudonym may look like: no spaces, no ``@``, at most 128 characters.
PSEUDONYM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)
#: Requester types known to the platform (``federation.spec.PurposeSpec`` uses the same).
REQUESTER_TYPES = frozenset({"academic", "public", "commercial", "clinical", "nonprofit"})
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(utc)]


class ConsentStatus(StrEnum):
    """FHIR R5 ``Consent.status`` values."""

    DRAFT = "draft"
    ACTIVE = "active"
    INACTIVE = "inactive"
    NOT_DONE = "not-done"
    ENTERED_IN_ERROR = "entered-in-error"
    UNKNOWN = "unknown"


class DecisionType(StrEnum):
    """FHIR R5 ``Consent.decision`` values."""

    PERMIT = "permit"
    DENY = "deny"

    def flipped(self) -> DecisionType:
        """Return the opposite decision (what a nested exception decides)."""
        return DecisionType.DENY if self is DecisionType.PERMIT else DecisionType.PERMIT


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(_Frozen):
    """A closed time interval; a missing end means open-ended."""

    start: UtcDatetime | None = None
    end: UtcDatetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("period.end is before period.start")
        return self

    def contains(self, at: datetime) -> bool:
        """Return True when ``at`` lies within the period (both ends inclusive)."""
        t = utc(at)
        return (self.start is None or self.start <= t) and (self.end is None or t <= self.end)

    def covers(self, other: Period) -> bool:
        """Return True when ``other`` lies entirely within this period."""
        if self.start is not None and (other.start is None or other.start < self.start):
            return False
        return not (self.end is not None and (other.end is None or other.end > self.end))


def _codes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", ";").split(";") if v.strip()]
    return tuple(dict.fromkeys(normalise_code(v) for v in value))


class Provision(_Frozen):
    """One FHIR provision: an exception to its parent's decision.

    Empty attributes match everything. Attributes are AND-ed.

    Attributes:
        period: when the provision applies (the time of use must fall inside).
        actor_types: requester types it applies to (``academic``, ``commercial``, ...).
        actor_orgs: requester organisations it applies to.
        purposes: DUO codes (use categories and modifiers, see ``consent.duo``).
        diseases: diseases qualifying a ``DS`` purpose (MONDO or ICD-10 strings).
        domains: data domains (``births``, ``checkups``, ...).
        data_period: the time range of the records it covers.
        actions: FHIR consent actions (``use``, ``access``, ``collect``, ...); a provision
            naming neither ``use`` nor ``access`` never matches a secondary use.
        provisions: nested exceptions to this provision.

    """

    period: Period | None = None
    actor_types: tuple[str, ...] = ()
    actor_orgs: tuple[str, ...] = ()
    purposes: tuple[str, ...] = ()
    diseases: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    data_period: Period | None = None
    actions: tuple[str, ...] = ()
    provisions: tuple[Provision, ...] = ()

    @field_validator("purposes", mode="before")
    @classmethod
    def _known_purposes(cls, value: Any) -> tuple[str, ...]:
        codes = _codes(value)
        request_only = [c for c in codes if c not in USE_CATEGORIES | MODIFIERS]
        if request_only:
            raise ValueError(f"{request_only} can only appear in a request")
        return codes

    @field_validator("actor_types")
    @classmethod
    def _known_actor_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v not in REQUESTER_TYPES]
        if bad:
            raise ValueError(f"unknown requester type(s) {bad}; known: {sorted(REQUESTER_TYPES)}")
        return value

    @field_validator("domains")
    @classmethod
    def _domain_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not _DOMAIN.match(v)]
        if bad:
            raise ValueError(f"bad data domain name(s) {bad}: use lower_snake_case")
        return value

    @model_validator(mode="after")
    def _ds_has_disease(self) -> Provision:
        if "DS" in self.purposes and not self.diseases:
            raise ValueError("purpose DS needs at least one disease")
        if self.diseases and "DS" not in self.purposes:
            raise ValueError("diseases are only meaningful with purpose DS")
        return self


class Consent(_Frozen):
    """One version of one subject's consent.

    Attributes:
        id: the consent's logical id (stable across versions).
        subject: the subject's pseudonym (never a name or a number from an ID card).
        status: FHIR status; only ``active`` consents can permit anything.
        decision: the base decision, before provisions.
        period: when the consent is in force.
        provisions: top-level exceptions to the base decision.
        recorded_at: when this version was recorded; it supersedes earlier versions from
            then on.
        version: 1 for the first version of a subject's consent, then 2, 3, ...

    """

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    subject: str = Field(pattern=PSEUDONYM_PATTERN)
    status: ConsentStatus
    decision: DecisionType
    period: Period | None = None
    provisions: tuple[Provision, ...] = ()
    recorded_at: UtcDatetime
    version: int = Field(default=1, ge=1)

    def content(self) -> dict[str, Any]:
        """Return what evaluation depends on (status, decision, period, provisions)."""
        return self.model_dump(
            mode="json",
            include={"status", "decision", "period", "provisions"},
            exclude_defaults=False,
        )

    @cached_property
    def content_key(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`content`; equal keys decide alike."""
        return hashlib.sha256(rfc8785.dumps(self.content())).hexdigest()


class Purpose(_Frozen):
    """Why and by whom data would be used.

    Attributes:
        codes: DUO codes of the use: its category (``HMB``, ``DS``, ...; none means
            ``GRU``) and the obligations it accepts (``IRB``, ``PUB``, ...), or ``MDS``.
        disease: the disease a ``DS`` use is about (MONDO or ICD-10 string).
        commercial: whether the use is commercial.
        requester_type: ``academic``, ``public``, ``commercial``, ``clinical``, ``nonprofit``.
        requester_org: the requesting organisation.

    """

    codes: tuple[str, ...] = Field(min_length=1)
    disease: str | None = Field(default=None, max_length=64)
    commercial: bool = False
    requester_type: str = "academic"
    requester_org: str | None = Field(default=None, max_length=128)

    @field_validator("codes", mode="before")
    @classmethod
    def _known(cls, value: Any) -> tuple[str, ...]:
        return _codes(value)

    @field_validator("requester_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in REQUESTER_TYPES:
            raise ValueError(f"unknown requester type {value!r}; known: {sorted(REQUESTER_TYPES)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Purpose:
        if "DS" in self.codes and self.disease is None:
            raise ValueError("a DS purpose needs a disease")
        if self.requester_type == "commercial" and not self.commercial:
            raise ValueError("a commercial requester must set commercial = true")
        return self


class UseRequest(Purpose):
    """A question about one use: may a subject's data in ``domain`` serve it at ``time``.

    Attributes:
        domain: the data domain to be read (None = not stated; fails closed).
        time: the moment of use.
        data_period: the time range of the records to be read (None = not stated).

    """

    domain: str | None = None
    time: UtcDatetime
    data_period: Period | None = None

    @classmethod
    def for_purpose(
        cls,
        purpose: Purpose,
        *,
        time: datetime,
        domain: str | None = None,
        data_period: Period | None = None,
    ) -> UseRequest:
        """Return a request for ``purpose`` at ``time`` in ``domain``.

        Raises:
            pydantic.ValidationError: a field is invalid.

        """
        return cls(**purpose.model_dump(), time=time, domain=domain, data_period=data_period)


class Decision(_Frozen):
    """The answer to a use request for one subject.

    Attributes:
        decision: permit or deny.
        path: which rule decided: ``none`` (no consent), ``consent.status``,
            ``consent.period``, ``consent`` (the base decision) or
            ``consent.provision[0].provision[1]``.
        reason: a readable explanation.
        consent_id: the deciding consent's id, if any.
        version: the deciding consent's version, if any.

    """

    decision: DecisionType
    path: str
    reason: str
    consent_id: str | None = None
    version: int | None = None

    @property
    def permitted(self) -> bool:
        """True when the decision is permit."""
        return self.decision is DecisionType.PERMIT
