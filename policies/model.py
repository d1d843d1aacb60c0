"""The node policy: which jobs a data holder lets run on its node, and under which limits.

A policy is written as TOML and validated once when loaded; every refusal names the
field (``budget.births.epsilon: must be greater than 0``). Example::

    min_cohort = 50
    min_cell_count = 10
    max_epsilon_per_job = 3.0
    max_delta_per_job = 1e-5
    require_secure_aggregation = true
    require_dp = true

    [purposes]
    allowed = ["GRU", "HMB", "DS"]
    commercial = false

    [requesters]
    allowed = []                       # requester / organisation ids; empty = anyone
    types = ["academic", "public", "clinical"]

    [jobs]
    kinds = ["train", "stats", "glm"]
    models = ["logreg", "mlp"]         # or "*"

    [identifiers]
    extra = ["mother_code"]            # added to the built-in never-usable columns

    [domains.births]
    features = ["maternal_age", "gestational_weeks", "parity", "low_birth_weight"]

    [domains.checkups]
    features = "*"                     # any column except identifiers

    [budget.births]
    epsilon = 10.0
    delta = 1e-4
    period = "year"                    # calendar "year", calendar "month", or "total"

    [approval]
    mode = "automatic_for"             # "automatic", "manual" or "automatic_for"
    automatic_for = ["hokkaido-u"]

    [release]
    review = "admin"                   # "none", "admin" or "two_reviewers" (output checking)
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consent.duo import MODIFIERS, USE_CATEGORIES
from policies.errors import PolicyError
from policies.request import JobKind, RequesterType

__all__ = [
    "DUO_CODES",
    "NEVER_USABLE_COLUMNS",
    "ApprovalRules",
    "BudgetPeriod",
    "BudgetRule",
    "DomainRules",
    "IdentifierRules",
    "JobRules",
    "NodePolicy",
    "PurposeRules",
    "ReleaseReview",
    "LinkageRules",
    "ReleaseRules",
    "RequesterRules",
    "default_policy",
    "is_identifier",
    "load_policy",
    "loads_policy",
    "parse_policy",
    "policy_to_toml",
]

#: GA4GH DUO codes a policy may allow (primary categories and modifiers).
DUO_CODES = USE_CATEGORIES | MODIFIERS

#: Columns that are never usable by any job, whatever a policy says: direct identifiers,
#: linkage keys and free text.
NEVER_USABLE_COLUMNS = frozenset(
    {
        "subject",
        "subject_id",
        "infant",
        "infant_id",
        "mother",
        "mother_id",
        "child_id",
        "patient_id",
        "person_id",
        "resident_id",
        "member_id",
        "customer_id",
        "record_id",
        "name",
        "first_name",
        "last_name",
        "full_name",
        "given_name",
        "family_name",
        "surname",
        "kana",
        "address",
        "street",
        "postcode",
        "postal_code",
        "zip",
        "zipcode",
        "phone",
        "phone_number",
        "telephone",
        "mobile",
        "email",
        "email_address",
        "birth_date",
        "date_of_birth",
        "dob",
        "notes",
        "note",
        "free_text",
        "comment",
        "comments",
        "pseudonym",
        "my_number",
        "mynumber",
        "insurance_number",
        "insurer_number",
        "passport",
        "ip_address",
        "device_id",
        "card_number",
        "loyalty_card",
    }
)

# A column whose name contains one of these ``_``-separated tokens is an identifier too
# (``mother_name``, ``home_address``, ``clinical_notes``).
_IDENTIFIER_TOKENS = frozenset(
    {
        "name",
        "address",
        "phone",
        "email",
        "pseudonym",
        "notes",
        "comment",
        "comments",
        "dob",
        "mynumber",
        "passport",
        "telephone",
        "postcode",
        "zipcode",
    }
)

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DOMAIN = re.compile(r"^[a-z_]{1,32}$")

BudgetPeriod = Literal["year", "month", "total"]
#: How a node reviews released results: ``none`` (released at once), ``admin`` (held until one
#: node admin releases them) or ``two_reviewers`` (until two distinct node admins do).
ReleaseReview = Literal["none", "admin", "two_reviewers"]
_ALL_KINDS: tuple[JobKind, ...] = ("train", "stats", "glm")
_ALL_REQUESTER_TYPES: tuple[RequesterType, ...] = ("academic", "public", "commercial", "clinical")


def is_identifier(column: str, extra: Iterable[str] = ()) -> bool:
    """Tell whether a column is a direct identifier or free text, hence never usable.

    Args:
        column: the column name (compared case-insensitively).
        extra: further never-usable names a policy adds.

    Returns:
        True when the column is built-in never-usable, named in ``extra``, or contains an
        identifier token (``mother_name``).

    """
    low = column.strip().lower()
    if low in NEVER_USABLE_COLUMNS or low in {e.lower() for e in extra}:
        return True
    return any(token in _IDENTIFIER_TOKENS for token in low.split("_"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PurposeRules(_Strict):
    """Which purposes the node serves.

    Attributes:
        allowed: DUO codes a job's purposes must all be among.
        commercial: whether commercial uses and commercial requesters are allowed.

    """

    allowed: tuple[str, ...] = ("GRU", "HMB", "DS")
    commercial: bool = False

    @field_validator("allowed")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        codes = tuple(code.strip().upper() for code in value)
        unknown = sorted(set(codes) - DUO_CODES)
        if unknown:
            raise ValueError(f"unknown DUO code(s) {unknown}; known: {sorted(DUO_CODES)}")
        return codes


class RequesterRules(_Strict):
    """Who may run jobs here.

    Attributes:
        allowed: requester or organisation ids; empty means any requester.
        types: requester types allowed (``academic``, ``public``, ``commercial``, ``clinical``).

    """

    allowed: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    types: tuple[RequesterType, ...] = _ALL_REQUESTER_TYPES


class JobRules(_Strict):
    """Which kinds of job and which models are allowed.

    Attributes:
        kinds: job kinds allowed.
        models: model-registry names allowed, or ``"*"`` for any registered model.

    """

    kinds: tuple[JobKind, ...] = _ALL_KINDS
    models: tuple[str, ...] | Literal["*"] = "*"


class IdentifierRules(_Strict):
    """Columns that no job may read, on top of :data:`NEVER_USABLE_COLUMNS`.

    Attributes:
        extra: further never-usable column names (the built-in set cannot be reduced).

    """

    extra: tuple[str, ...] = ()


class DomainRules(_Strict):
    """What a job may read in one data domain.

    Attributes:
        features: allowed columns (features and labels), or ``"*"`` for every column that is
            not an identifier.

    """

    features: tuple[str, ...] | Literal["*"] = "*"

    @field_validator("features")
    @classmethod
    def _column_names(cls, value: tuple[str, ...] | str) -> tuple[str, ...] | str:
        if isinstance(value, str):
            return value
        for name in value:
            if not _COLUMN.match(name):
                raise ValueError(f"{name!r} is not a column name (letters, digits, _)")
            if is_identifier(name):
                raise ValueError(
                    f"{name!r} is a direct identifier or free text and can never be allowed"
                )
        return value


class BudgetRule(_Strict):
    """The privacy budget of one domain for one period.

    Attributes:
        epsilon: total ε the node spends on the domain per period.
        delta: total δ per period.
        period: ``year`` (calendar year), ``month`` (calendar month) or ``total`` (never renewed).

    """

    epsilon: float = Field(gt=0, le=1000, allow_inf_nan=False)
    delta: float = Field(default=1e-4, ge=0, lt=1, allow_inf_nan=False)
    period: BudgetPeriod = "year"


class ApprovalRules(_Strict):
    """Whether jobs that pass every rule run at once or wait for the node admin.

    Attributes:
        mode: ``automatic`` (run at once), ``manual`` (always wait) or ``automatic_for``
            (run at once for the requesters listed, wait for the others).
        automatic_for: requester ids approved automatically in ``automatic_for`` mode.

    """

    mode: Literal["automatic", "manual", "automatic_for"] = "manual"
    automatic_for: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()

    @model_validator(mode="after")
    def _list_matches_mode(self) -> ApprovalRules:
        if self.mode == "automatic_for" and not self.automatic_for:
            raise ValueError("automatic_for: mode 'automatic_for' needs at least one requester")
        if self.mode != "automatic_for" and self.automatic_for:
            raise ValueError(
                f"automatic_for: only used when mode = 'automatic_for', not {self.mode!r}"
            )
        return self


class ReleaseRules(_Strict):
    """Output checking: whether results of jobs this node took part in are held for review.

    Attributes:
        review: ``none`` (results are released when the job ends), ``admin`` (the coordinator
            holds them until one of this node's admins releases them) or ``two_reviewers``
            (until two distinct admins of this node do).

    """

    review: ReleaseReview = "none"


class LinkageRules(_Strict):
    """Whether this node takes part in linked jobs (its columns joined with other holders').

    A linked job aligns this node's consenting residents with other holders' by private
    set intersection (this node learns which of its residents are in the linked cohort;
    set sizes are public) and computes on secret shares of its columns.

    Attributes:
        allowed: take part in linked jobs at all (off by default).
        purposes: DUO codes a linked job's purposes must all be among; empty means any
            purpose the purpose rules allow.

    """

    allowed: bool = False
    purposes: tuple[Annotated[str, Field(min_length=1, max_length=16)], ...] = ()


class NodePolicy(_Strict):
    """A node's policy: which jobs may run here and under which limits.

    Attributes:
        min_cohort: minimum number of subjects left after consent filtering.
        min_cell_count: smallest count a released statistic may rest on.
        max_epsilon_per_job: largest ε one job may ask for.
        max_delta_per_job: largest δ one job may ask for.
        require_secure_aggregation: refuse jobs that do not use SecAgg+.
        require_dp: refuse jobs without a DP (ε, δ) target.
        purposes: DUO purposes and commercial use.
        requesters: who may submit.
        jobs: job kinds and models.
        identifiers: extra never-usable columns.
        domains: the domains a job may read, with their allowed columns.
        budget: the privacy budget per domain.
        approval: automatic or manual approval.
        release: whether released results wait for the node's review.
        linkage: whether, and for which purposes, linked jobs may use this node's data.

    """

    min_cohort: int = Field(default=50, ge=1, le=10_000_000)
    min_cell_count: int = Field(default=10, ge=1, le=1_000_000)
    max_epsilon_per_job: float = Field(default=3.0, gt=0, le=100, allow_inf_nan=False)
    max_delta_per_job: float = Field(default=1e-5, ge=0, lt=1, allow_inf_nan=False)
    require_secure_aggregation: bool = True
    require_dp: bool = True
    purposes: PurposeRules = Field(default_factory=PurposeRules)
    requesters: RequesterRules = Field(default_factory=RequesterRules)
    jobs: JobRules = Field(default_factory=JobRules)
    identifiers: IdentifierRules = Field(default_factory=IdentifierRules)
    domains: dict[str, DomainRules] = Field(default_factory=dict)
    budget: dict[str, BudgetRule] = Field(default_factory=dict)
    approval: ApprovalRules = Field(default_factory=ApprovalRules)
    release: ReleaseRules = Field(default_factory=ReleaseRules)
    linkage: LinkageRules = Field(default_factory=LinkageRules)

    @field_validator("domains", "budget")
    @classmethod
    def _domain_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _DOMAIN.match(name):
                raise ValueError(f"{name!r} is not a domain name (lower-case letters and _)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NodePolicy:
        for name in self.budget:
            if name not in self.domains:
                raise ValueError(f"budget.{name}: no [domains.{name}] table allows this domain")
        if self.require_dp:
            missing = sorted(set(self.domains) - set(self.budget))
            if missing:
                raise ValueError(
                    f"budget.{missing[0]}: require_dp is on, so every domain needs a "
                    f"[budget.{missing[0]}] table (missing for {missing})"
                )
        for name, rules in self.domains.items():
            if isinstance(rules.features, tuple):
                bad = [c for c in rules.features if is_identifier(c, self.identifiers.extra)]
                if bad:
                    raise ValueError(
                        f"domains.{name}.features: {bad[0]!r} is listed in identifiers.extra "
                        "and can never be allowed"
                    )
        return self

    def never_usable(self) -> frozenset[str]:
        """Return the never-usable column names: the built-in set plus ``identifiers.extra``.

        Returns:
            Lower-case column names (token matches come on top, see :func:`is_identifier`).

        """
        return NEVER_USABLE_COLUMNS | {e.lower() for e in self.identifiers.extra}


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    # Union members and literal tags show up in the location; drop pydantic's own labels.
    parts = [p for p in parts if not p.startswith(("tuple[", "literal[", "function-"))]
    return ".".join(parts) or "policy"


def parse_policy(data: Mapping[str, Any]) -> NodePolicy:
    """Validate a policy given as a mapping (the parsed TOML).

    Args:
        data: the policy tables and keys.

    Returns:
        The validated :class:`NodePolicy`.

    Raises:
        PolicyError: naming the first offending field and why (the message lists every
            other problem found too).

    """
    try:
        return NodePolicy.model_validate(dict(data))
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            field = _field_path(tuple(err["loc"]))
            head = msg.split(":", 1)[0]
            if ":" in msg and " " not in head and head[:1].isalpha():
                field = (
                    f"{field}.{head}" if field != "policy" and not head.startswith(field) else head
                )
                msg = msg.split(":", 1)[1].strip()
            problems.append((field, msg))
        merged: dict[str, list[str]] = {}
        for field, msg in problems:  # a union field fails once per member: one line each
            merged.setdefault(field, []).append(msg)
        (first_field, first_msgs), *others = merged.items()
        first_msg = " or ".join(first_msgs)
        rest = "; ".join(f"{f}: {' or '.join(m)}" for f, m in others)
        raise PolicyError(first_field, first_msg + (f" (also: {rest})" if rest else "")) from None


def loads_policy(text: str) -> NodePolicy:
    """Validate a policy given as TOML text.

    Args:
        text: the TOML document.

    Returns:
        The validated :class:`NodePolicy`.

    Raises:
        PolicyError: the text is not TOML, nests too deeply, or a field is invalid (the
            message names it).

    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("policy", f"not valid TOML: {exc}") from None
    except RecursionError:  # the parser recurses once per nested array or inline table
        raise PolicyError("policy", "nests arrays or tables too deeply to read") from None
    return parse_policy(data)


def load_policy(path: Path) -> NodePolicy:
    """Read and validate a policy TOML file.

    Args:
        path: the policy file.

    Returns:
        The validated :class:`NodePolicy`.

    Raises:
        PolicyError: the file cannot be read, is not TOML, or a field is invalid.

    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError("policy", f"cannot read {path}: {exc.strerror}") from None
    return loads_policy(text)


#: The common-data-model domains a fresh node knows (docs/architecture.md, vocabulary).
_DEFAULT_DOMAINS = ("births", "checkups", "infant_checkups", "purchases", "dairy_intake")


def default_policy() -> NodePolicy:
    """Return the policy a node starts with when its admin has not written one.

    It is deliberately cautious: every job waits for the admin (manual approval), DP and
    secure aggregation are required, non-commercial health research only (GRU, HMB, DS),
    every common-data-model domain readable except identifiers, ε = 10, δ = 1e-4 per
    domain and calendar year, at most ε = 3 and δ = 1e-5 per job.

    Returns:
        The default :class:`NodePolicy`.

    """
    return NodePolicy(
        domains={d: DomainRules(features="*") for d in _DEFAULT_DOMAINS},
        budget={d: BudgetRule(epsilon=10.0, delta=1e-4, period="year") for d in _DEFAULT_DOMAINS},
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PolicyError("policy", f"cannot write non-finite number {value!r} as TOML")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise PolicyError("policy", f"cannot write {type(value).__name__} as TOML")


def _toml_table(prefix: str, data: Mapping[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if prefix and (scalars or not tables):
        out.append(f"\n[{prefix}]")
    for key, value in scalars.items():
        out.append(f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        _toml_table(f"{prefix}.{key}" if prefix else key, value, out)


def policy_to_toml(policy: NodePolicy) -> str:
    """Write a policy as TOML that :func:`loads_policy` reads back to an equal policy.

    Args:
        policy: the policy to write.

    Returns:
        The TOML document (every field written out, defaults included).

    Raises:
        PolicyError: a value cannot be represented in TOML (never for a validated policy).

    """
    out: list[str] = ["# Hamanasu node policy"]
    _toml_table("", policy.model_dump(mode="python"), out)
    return "\n".join(out).strip() + "\n"
