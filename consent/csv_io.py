"""Read the CSV form of bulk paper consents into FHIR-shaped consent versions.

Columns (header required, in any order; no other columns):
``subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end``.
One row is one consent version; later rows for the same subject supersede earlier ones
from their ``recorded_at``.

Mapping onto FHIR semantics (a base decision and one provision per restriction):

* ``purposes`` are DUO short names or ``DUO:`` ids; a disease-specific purpose is
  written ``DS:<disease>`` (``DS:ICD10:P07``, ``DS:MONDO:0005015``).
* ``decision=permit``: base ``deny`` with one ``permit`` provision carrying the permitted
  ``purposes`` (empty = any purpose), ``NCU`` when ``commercial=no``, and the
  ``domains`` (empty = every domain).
* ``decision=deny`` with empty ``purposes`` and ``domains``: base ``deny``, no provisions
  (nothing is permitted).
* ``decision=deny`` otherwise: base ``permit`` with a ``deny`` provision for the listed
  purposes in the listed domains, and, when ``commercial=no``, a second ``deny`` provision
  ``NCU`` that refuses commercial use everywhere.
* ``period_start``/``period_end`` (ISO date or datetime) = ``Consent.period``; a date-only
  end covers that whole day.
* A withdrawal is a row with ``status=inactive``.
"""

from __future__ import annotations

import csv
import hashlib
import re
from datetime import UTC, date, datetime, time
from pathlib import Path

from pydantic import ValidationError

from consent.duo import normalise_code
from consent.errors import ConsentImportError, ImportProblem
from consent.model import PSEUDONYM_PATTERN, Consent, ConsentStatus, Period, Provision, utc

__all__ = ["CSV_COLUMNS", "consent_id_for", "read_csv_consents"]

CSV_COLUMNS = (
    "subject",
    "recorded_at",
    "status",
    "decision",
    "purposes",
    "commercial",
    "domains",
    "period_start",
    "period_end",
)
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_YES = {
    "yes": True,
    "y": True,
    "true": True,
    "1": True,
    "no": False,
    "n": False,
    "false": False,
    "0": False,
}


def consent_id_for(subject: str) -> str:
    """Return the stable logical consent id used for a subject's CSV consents."""
    return "csv-" + hashlib.sha256(subject.encode()).hexdigest()[:32]


def _when(text: str, end: bool = False) -> datetime:
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), time.max if end else time.min, tzinfo=UTC)
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _row(row: dict[str, str], where: str, problems: list[ImportProblem]) -> Consent | None:
    def bad(field: str, reason: str) -> None:
        problems.append(ImportProblem(location=where, field=field, reason=reason))

    before = len(problems)
    values = {k: (row.get(k) or "").strip() for k in CSV_COLUMNS}
    if not _PSEUDONYM.match(values["subject"]):
        bad("subject", "must be a pseudonym (letters, digits, . _ -; no names or e-mails)")
    recorded: datetime | None = None
    try:
        recorded = _when(values["recorded_at"]) if values["recorded_at"] else None
        if recorded is None:
            bad("recorded_at", "required (ISO 8601 datetime)")
    except ValueError:
        bad("recorded_at", f"not an ISO 8601 datetime: {values['recorded_at']!r}")
    status = values["status"]
    if status not in {s.value for s in ConsentStatus}:
        bad("status", f"must be one of {sorted(s.value for s in ConsentStatus)}, got {status!r}")
    decision = values["decision"]
    if decision not in ("permit", "deny"):
        bad("decision", f"must be permit or deny, got {decision!r}")
    purposes: list[str] = []
    diseases: list[str] = []
    for code in (c for c in values["purposes"].split(";") if c.strip()):
        code, _, disease = (
            (code, "", "") if code.strip().upper().startswith("DUO") else (code.partition(":"))
        )
        try:
            norm = normalise_code(code)
        except ValueError as exc:
            bad("purposes", str(exc))
            continue
        if norm == "DS" and not disease.strip():
            bad("purposes", "DS needs a disease: write DS:<disease>, e.g. DS:ICD10:P07")
        elif norm == "DS":
            purposes.append(norm)
            diseases.append(disease.strip())
        elif norm == "MDS":
            bad("purposes", "MDS can only appear in a request")
        else:
            purposes.append(norm)
    commercial = _YES.get(values["commercial"].lower())
    if commercial is None:
        bad("commercial", f"must be yes or no, got {values['commercial']!r}")
    domains = tuple(d.strip() for d in values["domains"].split(";") if d.strip())
    for d in domains:
        if not _DOMAIN.match(d):
            bad("domains", f"bad data domain name {d!r}: use lower_snake_case")
    period: Period | None = None
    try:
        start = _when(values["period_start"]) if values["period_start"] else None
    except ValueError:
        bad("period_start", f"not an ISO 8601 date: {values['period_start']!r}")
        start = None
    try:
        end = _when(values["period_end"], end=True) if values["period_end"] else None
    except ValueError:
        bad("period_end", f"not an ISO 8601 date: {values['period_end']!r}")
        end = None
    if start is not None and end is not None and end < start:
        bad("period_end", "is before period_start")
    elif start is not None or end is not None:
        period = Period(start=start, end=end)
    if len(problems) > before or recorded is None or commercial is None:
        return None  # each missing value was reported as a problem above
    ncu = [] if commercial else ["NCU"]
    provisions: tuple[Provision, ...]
    try:
        if decision == "permit":
            base = "deny"
            provisions = (
                Provision(purposes=(*purposes, *ncu), diseases=tuple(diseases), domains=domains),
            )
        elif not purposes and not domains:
            base, provisions = "deny", ()
        else:
            base = "permit"
            provisions = (
                Provision(purposes=tuple(purposes), diseases=tuple(diseases), domains=domains),
            )
            if ncu:
                provisions += (Provision(purposes=("NCU",)),)
        return Consent.model_validate(
            {
                "id": consent_id_for(values["subject"]),
                "subject": values["subject"],
                "status": status,
                "decision": base,
                "period": period,
                "provisions": provisions,
                "recorded_at": recorded,
            }
        )
    except ValidationError as exc:
        for err in exc.errors():
            field = next((str(p) for p in err["loc"] if str(p) in CSV_COLUMNS), None)
            if field is None:
                field = "domains" if "domains" in map(str, err["loc"]) else str(err["loc"][0])
            bad(field, err["msg"])
        return None


def read_csv_consents(path: Path) -> list[Consent]:
    """Read a consent CSV file.

    Returns:
        One consent per row, in file order (``version`` is left at 1; the registry
        numbers versions).

    Raises:
        ConsentImportError: the file is unreadable, its header is wrong, or any row is
            bad; every bad row is listed (``line N``, column, reason).

    """
    source = str(path)
    problems: list[ImportProblem] = []
    consents: list[Consent] = []
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in CSV_COLUMNS if c not in header]
            extra = [c for c in header if c not in CSV_COLUMNS]
            if missing or extra:
                reason = f"missing columns {missing}" if missing else ""
                reason += ("; " if reason else "") + (f"unknown columns {extra}" if extra else "")
                raise ConsentImportError(
                    source, [ImportProblem(location="line 1", field="header", reason=reason)]
                )
            seen: dict[tuple[str, datetime], int] = {}
            for row in reader:
                where = f"line {reader.line_num}"
                if None in row:
                    problems.append(
                        ImportProblem(location=where, field="-", reason="more fields than columns")
                    )
                    continue
                consent = _row(row, where, problems)
                if consent is None:
                    continue
                key = (consent.subject, consent.recorded_at)
                if key in seen:
                    problems.append(
                        ImportProblem(
                            location=where,
                            field="recorded_at",
                            reason=f"same subject and recorded_at as line {seen[key]}",
                        )
                    )
                    continue
                seen[key] = reader.line_num
                consents.append(consent)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConsentImportError(
            source, [ImportProblem(location="file", field="-", reason=f"not readable CSV: {exc}")]
        ) from None
    if not consents and not problems:
        problems.append(ImportProblem(location="line 2", field="-", reason="no rows"))
    if problems:
        raise ConsentImportError(source, problems)
    return consents
