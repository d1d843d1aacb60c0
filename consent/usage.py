"""Audit one job's data use at one node.

Did the node use exactly the subjects it committed to, and did each of them consent to
the job's purpose at the time of use?

The node discloses, for one job, the salt and the subjects it used per round (a JSON
file: ``{"job_id": ..., "salt": "<hex>", "rounds": {"1": ["<pseudonym>", ...], ...}}``).
The auditor recomputes each round's subject commitment, compares it and the count with
the ``job.usage`` ledger entries, and re-evaluates every subject's consent version in
force at the entry's time against the job's purpose.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consent.entries import JobUsagePayload
from consent.errors import (
    ConsentError,
    LedgerUnreadableError,
    LedgerVerificationError,
    UsageAuditError,
)
from consent.ledger import subject_commitment
from consent.registry import ConsentRegistry

__all__ = ["Disclosure", "RoundAudit", "UsageReport", "audit_usage", "load_disclosure"]


class Disclosure(BaseModel):
    """A node's disclosure of the subjects one job used.

    Attributes:
        job_id: the job.
        salt: the job's commitment salt, hex (at least 16 bytes).
        rounds: round number -> pseudonyms used in that round.
        rereads: round number -> earlier pseudonym lists of a round that was read again
            with other subjects (a retried round after a consent changed); each usage
            entry of the round must match one of its lists.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1, max_length=128)
    salt: str = Field(pattern=r"^([0-9a-fA-F]{2}){16,}$")
    rounds: dict[int, list[str]]
    rereads: dict[int, list[list[str]]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _rounds_as_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("rounds"), list):
            data = dict(data)
            data["rounds"] = {int(r["round"]): r["subjects"] for r in data["rounds"]}
        return data

    @field_validator("rounds")
    @classmethod
    def _non_empty(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        if not value:
            raise ValueError("at least one round is needed")
        return value

    @property
    def salt_bytes(self) -> bytes:
        """The salt as bytes."""
        return bytes.fromhex(self.salt)


def load_disclosure(path: Path) -> Disclosure:
    """Read a disclosure JSON file.

    Raises:
        ConsentError: unreadable or invalid (the message names the field).

    """
    try:
        return Disclosure.model_validate_json(Path(path).read_bytes())
    except OSError as exc:
        raise ConsentError(f"cannot read disclosure {path}: {exc.strerror}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise ConsentError(f"disclosure {path}: {where}: {err['msg']}") from None


class RoundAudit(BaseModel):
    """The audit of one ``job.usage`` entry (one round).

    Attributes:
        round: the round.
        ledger_index: the entry's index (None when the round was disclosed but not logged).
        at: the time of use recorded in the entry.
        purpose: the job's DUO codes.
        n_logged: subjects the ledger says were used.
        n_disclosed: distinct subjects disclosed for the round.
        commitment_ok: the recomputed commitment equals the logged one.
        not_permitted: disclosed subjects without a permitting consent at ``at``.
        problems: what failed, readable.

    """

    round: int
    ledger_index: int | None
    at: datetime | None
    purpose: list[str]
    n_logged: int | None
    n_disclosed: int | None
    commitment_ok: bool
    not_permitted: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.problems


class UsageReport(BaseModel):
    """The audit of one job at one node."""

    job_id: str
    rounds: list[RoundAudit]
    ok: bool


def _usage_entries(ledger_path: Path, job_id: str) -> list[tuple[int, datetime, JobUsagePayload]]:
    """Return the job's ``job.usage`` entries as (index, time, payload).

    Raises:
        LedgerUnreadableError: the file cannot be read as a ledger.
        LedgerVerificationError: a usage entry is malformed (names it).
    """
    if not Path(ledger_path).is_file():
        raise LedgerUnreadableError(f"{ledger_path} does not exist")
    try:
        db = sqlite3.connect(f"file:{Path(ledger_path).resolve()}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT idx, at, data FROM entries WHERE kind = 'job.usage' ORDER BY idx"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise LedgerUnreadableError(f"not a readable ledger: {exc}") from None
    out = []
    for idx, at, data in rows:
        try:
            payload = json.loads(data)["payload"]
            if payload.get("job_id") != job_id:
                continue
            when = datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            out.append((idx, when, JobUsagePayload.model_validate(payload)))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            # ValidationError is a ValueError; RecursionError: JSON nested too deep
            raise LedgerVerificationError(idx, "job.usage entry is malformed") from None
    return out


def _audit_round(
    idx: int,
    at: datetime,
    usage: JobUsagePayload,
    disclosure: Disclosure,
    registry: ConsentRegistry,
    max_listed: int,
) -> RoundAudit:
    """Check one usage entry against the subjects disclosed for its round.

    Returns:
        The round's audit; its ``problems`` say what did not hold (none: it holds).
    """
    subjects = disclosure.rounds.get(usage.round)
    problems: list[str] = []
    commitment_ok, n_disclosed, refused = False, None, []
    if subjects is None:
        problems.append("round not disclosed")
    else:
        salt = disclosure.salt_bytes
        lists = [sorted(set(s)) for s in (subjects, *disclosure.rereads.get(usage.round, []))]
        matching = [d for d in lists if subject_commitment(d, salt) == usage.subject_commitment]
        distinct = matching[0] if matching else lists[0]
        n_disclosed = len(distinct)
        commitment_ok = bool(matching)
        if not commitment_ok:
            problems.append("commitment does not match the disclosed subjects")
        if len(distinct) != usage.n_subjects:
            problems.append(f"ledger says {usage.n_subjects} subjects, {len(distinct)} disclosed")
        allowed = registry.permitted(distinct, usage.to_request(at), at)
        refused = [s for s, ok in zip(distinct, allowed, strict=True) if not ok]
        if refused:
            problems.append(f"{len(refused)} subject(s) had no permitting consent at the time")
    return RoundAudit(
        round=usage.round,
        ledger_index=idx,
        at=at,
        purpose=list(usage.purpose),
        n_logged=usage.n_subjects,
        n_disclosed=n_disclosed,
        commitment_ok=commitment_ok,
        not_permitted=refused[:max_listed],
        problems=problems,
    )


def audit_usage(
    ledger_path: Path,
    job_id: str,
    disclosure: Disclosure,
    registry: ConsentRegistry,
    max_listed: int = 20,
) -> UsageReport:
    """Check a job's usage entries against the node's disclosure and consents.

    Args:
        ledger_path: the node's ledger (verify it first with ``verify_ledger``).
        job_id: the job to audit.
        disclosure: the node's disclosed salt and subjects per round.
        registry: the node's consent registry.
        max_listed: how many non-permitted subjects to name per round.

    Returns:
        The report, when every round holds.

    Raises:
        LedgerUnreadableError: the ledger file cannot be read.
        LedgerVerificationError: a usage entry of the ledger is malformed.
        ConsentError: the disclosure is for another job, or the ledger has no usage for it.
        UsageAuditError: a commitment, count or consent check failed; ``report`` holds the
            full report.

    """
    if disclosure.job_id != job_id:
        raise ConsentError(f"disclosure is for job {disclosure.job_id!r}, not {job_id!r}")
    entries = _usage_entries(ledger_path, job_id)
    if not entries:
        raise ConsentError(f"the ledger records no usage for job {job_id!r}")
    audits: list[RoundAudit] = []
    logged_rounds = set()
    for idx, at, usage in entries:
        logged_rounds.add(usage.round)
        audits.append(_audit_round(idx, at, usage, disclosure, registry, max_listed))
    for r in sorted(set(disclosure.rounds) - logged_rounds):
        audits.append(
            RoundAudit(
                round=r,
                ledger_index=None,
                at=None,
                purpose=[],
                n_logged=None,
                n_disclosed=len(set(disclosure.rounds[r])),
                commitment_ok=False,
                not_permitted=[],
                problems=["round disclosed but not in the ledger"],
            )
        )
    report = UsageReport(job_id=job_id, rounds=audits, ok=all(a.ok for a in audits))
    if not report.ok:
        bad = next(a for a in audits if not a.ok)
        raise UsageAuditError(f"job {job_id} round {bad.round}: {'; '.join(bad.problems)}", report)
    return report
