"""The node's consent registry: every version of every subject's consent, in SQLite.

Versions are only ever added: a change or a withdrawal is a new version that supersedes
the previous ones from its ``recorded_at``. Each version points at a *shape*: the
canonical content evaluation depends on (status, decision, period, provisions), stored
once however many subjects share it, so deciding a request for a million subjects
evaluates each distinct shape once and broadcasts the answers with numpy.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from consent.canonical import canonical_json
from consent.csv_io import read_csv_consents
from consent.duo import DEFAULT_DISEASES, DiseaseHierarchy
from consent.errors import ConsentError, ConsentImportError, ImportProblem
from consent.evaluate import evaluate
from consent.fhir_io import consents_to_bundle, read_fhir_consents
from consent.model import Consent, ConsentStatus, UseRequest, utc
from consent.sqlite_store import SqliteStore, append_only

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from consent.ledger import Ledger

__all__ = ["ConsentRegistry", "ImportResult", "event_kind"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS shapes(
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, content TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions(
    seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, version INTEGER NOT NULL,
    consent_id TEXT NOT NULL, recorded_at TEXT NOT NULL, recorded_us INTEGER NOT NULL,
    shape_id INTEGER NOT NULL REFERENCES shapes(id), source TEXT NOT NULL,
    UNIQUE(subject, version));
CREATE INDEX IF NOT EXISTS versions_by_time ON versions(subject, recorded_us, version);
"""
_SCHEMA += append_only("versions", "consent history")
_SCHEMA += append_only("shapes", "consent shapes", deletes=False)


def _us(at: datetime) -> int:
    delta = utc(at) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_kind(consent: Consent, previous: Consent | None) -> str:
    """Return the ledger kind for a new version: granted, changed or withdrawn.

    ``granted``: active and the subject had no active consent before; ``withdrawn``: not
    active and the previous version was active; ``changed``: anything else.
    """
    was_active = previous is not None and previous.status is ConsentStatus.ACTIVE
    if consent.status is ConsentStatus.ACTIVE:
        return "consent.changed" if was_active else "consent.granted"
    return "consent.withdrawn" if was_active else "consent.changed"


class ImportResult(BaseModel):
    """What an import did.

    Attributes:
        source: the file imported.
        imported: new versions stored.
        unchanged: rows identical to a version already stored (skipped, so re-importing a
            file is harmless).
        subjects: distinct subjects with a new version.
        ledger_indices: ledger entries written for the new versions.

    """

    model_config = ConfigDict(frozen=True)

    source: str
    imported: int
    unchanged: int
    subjects: int
    ledger_indices: list[int]


class ConsentRegistry(SqliteStore):
    """SQLite store of consent versions with point-in-time and vectorised queries.

    Args:
        path: the SQLite file (created when missing).
        ledger: where imports record consent events unless an import names another.
        diseases: disease hierarchy for ``DS`` matching.

    Raises:
        ConsentError: the file is not a usable registry.

    """

    def __init__(
        self,
        path: Path,
        ledger: Ledger | None = None,
        diseases: DiseaseHierarchy = DEFAULT_DISEASES,
    ) -> None:
        self.ledger = ledger
        self.diseases = diseases
        try:
            super().__init__(path)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConsentError(f"{self.path} is not a usable consent registry: {exc}") from None
        self._index: tuple[int, pd.Index, Any, Any, Any] | None = None
        self._shape_cache: dict[int, Consent] = {}

    # ---- imports ------------------------------------------------------------------
    def import_fhir(self, path: Path, ledger: Ledger | None = None) -> ImportResult:
        """Import a FHIR R5 Consent resource or Bundle, atomically.

        Returns:
            What was imported.

        Raises:
            ConsentImportError: any entry is bad; every bad entry is listed and nothing
                is stored.

        """
        return self.import_consents(read_fhir_consents(Path(path)), str(path), ledger)

    def import_csv(self, path: Path, ledger: Ledger | None = None) -> ImportResult:
        """Import a consent CSV file (see ``consent.csv_io``), atomically.

        Returns:
            What was imported.

        Raises:
            ConsentImportError: any row is bad; every bad row is listed and nothing is
                stored.

        """
        return self.import_consents(read_csv_consents(Path(path)), str(path), ledger)

    def import_consents(
        self, consents: Sequence[Consent], source: str = "api", ledger: Ledger | None = None
    ) -> ImportResult:
        """Store consents as new versions (all or none) and record ledger events.

        A consent identical to a stored version (same subject, ``recorded_at`` and
        content) is skipped. Versions are numbered per subject in import order.

        Returns:
            What was imported.

        Raises:
            ConsentImportError: two entries give one subject different content at the same
                ``recorded_at``.
            LedgerError: the ledger refused the events (nothing is stored).

        """
        ledger = ledger if ledger is not None else self.ledger
        seen: dict[tuple[str, int], tuple[int, str]] = {}
        problems = []
        for i, c in enumerate(consents):
            key = (c.subject, _us(c.recorded_at))
            if key in seen and seen[key][1] != c.content_key:
                problems.append(
                    ImportProblem(
                        location=f"entry[{i}]",
                        field="recorded_at",
                        reason=f"entry[{seen[key][0]}] gives this subject other content "
                        "at the same time",
                    )
                )
            seen.setdefault(key, (i, c.content_key))
        if problems:
            raise ConsentImportError(source, problems)
        with self._lock:
            try:
                with self._transaction():
                    return self._insert(consents, source, ledger)
            finally:
                self._index = None

    def _insert(
        self, consents: Sequence[Consent], source: str, ledger: Ledger | None
    ) -> ImportResult:
        db = self._db
        subjects = sorted({c.subject for c in consents})
        latest: dict[str, Consent] = {}
        existing: set[tuple[str, int, str]] = set()
        for chunk in range(0, len(subjects), 900):
            part = subjects[chunk : chunk + 900]
            marks = ",".join("?" * len(part))
            for subject, rec_us, key in db.execute(
                f"SELECT v.subject, v.recorded_us, s.key FROM versions v JOIN shapes s "
                f"ON s.id = v.shape_id WHERE v.subject IN ({marks})",
                part,
            ):
                existing.add((subject, rec_us, key))
            for row in db.execute(
                "SELECT v.subject, v.version, v.consent_id, v.recorded_at, s.content "
                f"FROM versions v "
                f"JOIN shapes s ON s.id = v.shape_id WHERE v.subject IN ({marks}) AND v.version = "
                f"(SELECT MAX(version) FROM versions w WHERE w.subject = v.subject)",
                part,
            ):
                latest[row[0]] = self._row_consent(*row)
        shape_ids = dict(db.execute("SELECT key, id FROM shapes").fetchall()) if consents else {}
        rows: list[tuple[Any, ...]] = []
        events: list[tuple[str, dict[str, Any], datetime]] = []
        unchanged = 0
        for c in consents:
            rec_us = _us(c.recorded_at)
            if (c.subject, rec_us, c.content_key) in existing:
                unchanged += 1
                continue
            existing.add((c.subject, rec_us, c.content_key))
            previous = latest.get(c.subject)
            version = 1 if previous is None else previous.version + 1
            stored = c.model_copy(update={"version": version})
            shape = shape_ids.get(c.content_key)
            if shape is None:
                cur = db.execute(
                    "INSERT INTO shapes(key, content) VALUES (?, ?)",
                    (c.content_key, canonical_json(c.content()).decode()),
                )
                shape = shape_ids[c.content_key] = int(cur.lastrowid or 0)
            rows.append(
                (c.subject, version, c.id, c.recorded_at.isoformat(), rec_us, shape, source)
            )
            events.append(
                (
                    event_kind(c, previous),
                    {
                        "subject": c.subject,
                        "consent_id": c.id,
                        "version": version,
                        "status": c.status.value,
                        "decision": c.decision.value,
                        "recorded_at": c.recorded_at.isoformat(),
                        "content_hash": c.content_key,
                    },
                    c.recorded_at,
                )
            )
            latest[c.subject] = stored
        db.executemany(
            "INSERT INTO versions(subject, version, consent_id, recorded_at, recorded_us, "
            "shape_id, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        indices = ledger.append_many(events) if ledger is not None and events else []
        return ImportResult(
            source=source,
            imported=len(rows),
            unchanged=unchanged,
            subjects=len({r[0] for r in rows}),
            ledger_indices=indices,
        )

    # ---- queries ------------------------------------------------------------------
    def _row_consent(
        self, subject: str, version: int, consent_id: str, recorded_at: str, content: str
    ) -> Consent:
        return Consent(
            id=consent_id,
            subject=subject,
            version=version,
            recorded_at=datetime.fromisoformat(recorded_at),
            **json.loads(content),
        )

    _SELECT = (
        "SELECT v.subject, v.version, v.consent_id, v.recorded_at, s.content "
        "FROM versions v JOIN shapes s ON s.id = v.shape_id "
    )

    def current(self, subject: str, at: datetime) -> Consent | None:
        """Return the version of ``subject``'s consent in force at ``at`` (None if none).

        The version in force is the one with the latest ``recorded_at`` not after ``at``;
        of several recorded at the same moment, the later import wins.
        """
        with self._lock:
            row = self._db.execute(
                self._SELECT + "WHERE v.subject = ? AND v.recorded_us <= ? "
                "ORDER BY v.recorded_us DESC, v.version DESC LIMIT 1",
                (subject, _us(at)),
            ).fetchone()
        return None if row is None else self._row_consent(*row)

    def history(self, subject: str) -> list[Consent]:
        """Return every version of ``subject``'s consent, oldest version first."""
        with self._lock:
            rows = self._db.execute(
                self._SELECT + "WHERE v.subject = ? ORDER BY v.version", (subject,)
            ).fetchall()
        return [self._row_consent(*r) for r in rows]

    def subjects(self) -> list[str]:
        """Return every subject with at least one version, sorted."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT subject FROM versions ORDER BY 1")
            return [r[0] for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM versions").fetchone()[0])

    def _load_index(self) -> tuple[pd.Index, Any, Any, Any]:
        stamp = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM versions").fetchone()[0])
        if self._index is None or self._index[0] != stamp:
            frame = pd.read_sql_query(
                "SELECT subject, recorded_us, shape_id FROM versions "
                "ORDER BY subject, recorded_us, version",
                self._db,
            )
            codes, uniques = pd.factorize(frame["subject"], sort=False)
            self._index = (
                stamp,
                pd.Index(uniques),
                np.asarray(codes, dtype=np.int64),
                frame["recorded_us"].to_numpy(np.int64),
                frame["shape_id"].to_numpy(np.int64),
            )
        return self._index[1], self._index[2], self._index[3], self._index[4]

    def _shape(self, shape_id: int) -> Consent:
        consent = self._shape_cache.get(shape_id)
        if consent is None:
            content = self._db.execute(
                "SELECT content FROM shapes WHERE id = ?", (shape_id,)
            ).fetchone()[0]
            consent = Consent(
                id="shape", subject="shape", recorded_at=_EPOCH, **json.loads(content)
            )
            self._shape_cache[shape_id] = consent
        return consent

    def permitted(
        self, subjects: Sequence[str], request: UseRequest, at: datetime | None = None
    ) -> NDArray[np.bool_]:
        """Decide ``request`` for many subjects with the versions in force at ``at``.

        Args:
            subjects: the subjects (unknown ones are denied).
            request: the use request (its ``time`` is replaced by ``at`` when given).
            at: the moment of use (default: ``request.time``).

        Returns:
            One bool per subject, True where the data may be used.

        """
        at = request.time if at is None else utc(at)
        if at != request.time:
            request = request.model_copy(update={"time": at})
        with self._lock:
            uniques, codes, rec_us, shapes = self._load_index()
            in_force = np.nonzero(rec_us <= _us(at))[0]
            by_subject = np.full(len(uniques), -1, dtype=np.int64)
            if len(in_force):
                subj = codes[in_force]
                last = in_force[np.r_[subj[1:] != subj[:-1], True]]
                by_subject[codes[last]] = shapes[last]
            pos = uniques.get_indexer(pd.Index(list(subjects), dtype=object))
            wanted = np.where(pos >= 0, by_subject[pos], -1)
            distinct = np.unique(wanted)
            answers = np.array(
                [
                    s >= 0 and evaluate(self._shape(int(s)), request, self.diseases).permitted
                    for s in distinct
                ],
                dtype=bool,
            )
        return answers[np.searchsorted(distinct, wanted)] if len(distinct) else np.zeros(0, bool)

    # ---- export -------------------------------------------------------------------
    def export_fhir(self, at: datetime | None = None, history: bool = False) -> dict[str, Any]:
        """Export consents as a FHIR R5 Bundle.

        Args:
            at: export the versions in force at this moment (default: each subject's
                latest version).
            history: export every version instead (a ``history`` Bundle).

        Returns:
            The Bundle as a JSON-ready dict.

        """
        with self._lock:
            if history:
                rows = self._db.execute(self._SELECT + "ORDER BY v.seq").fetchall()
                return consents_to_bundle([self._row_consent(*r) for r in rows], history=True)
            if at is None:
                rows = self._db.execute(
                    self._SELECT + "WHERE v.version = (SELECT MAX(version) FROM versions w "
                    "WHERE w.subject = v.subject) ORDER BY v.subject"
                ).fetchall()
                consents = [self._row_consent(*r) for r in rows]
            else:
                found = (self.current(s, at) for s in self.subjects())
                consents = [c for c in found if c is not None]
        return consents_to_bundle(consents)
