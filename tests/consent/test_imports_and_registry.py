from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from consent.csv_io import read_csv_consents
from consent.errors import ConsentImportError
from consent.evaluate import evaluate, evaluate_many
from consent.fhir_io import consent_from_fhir, consent_to_fhir, read_fhir_consents
from consent.ledger import Ledger
from consent.model import Consent, ConsentStatus, DecisionType, UseRequest
from consent.registry import ConsentRegistry

from .conftest import VECTORS

FHIR = VECTORS / "fhir"


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def hmb(when: datetime, domain: str = "births", **kw: object) -> UseRequest:
    return UseRequest(codes=["HMB"], time=when, domain=domain, **kw)  # type: ignore[arg-type]


def test_bad_fhir_bundle_lists_every_bad_entry(tmp_path: Path) -> None:
    with pytest.raises(ConsentImportError) as info:
        read_fhir_consents(FHIR / "bad_bundle.json")
    where = {(p.location, p.field.split(".")[0]) for p in info.value.problems}
    assert ("entry[1]", "status") in where
    assert ("entry[2]", "provision[0]") in where and "XYZ" in str(info.value)
    assert ("entry[3]", "subject") in where
    assert ("entry[4]", "resourceType") in where
    assert not any(p.location == "entry[0]" for p in info.value.problems)
    registry = ConsentRegistry(tmp_path / "r.db")
    with pytest.raises(ConsentImportError):
        registry.import_fhir(FHIR / "bad_bundle.json")
    assert len(registry) == 0  # atomic: the good entry was not stored either


def test_unsupported_fhir_elements_are_refused_not_ignored() -> None:
    resource = json.loads((FHIR / "permit.json").read_text())
    resource["provision"][0]["securityLabel"] = [{"code": "R"}]
    with pytest.raises(ConsentImportError, match="securityLabel"):
        consent_from_fhir(resource)
    resource = json.loads((FHIR / "permit.json").read_text())
    resource["provision"][0]["purpose"].append({"system": "http://example.org/x", "code": "Y"})
    with pytest.raises(ConsentImportError, match="system"):
        consent_from_fhir(resource)


def test_unreadable_files_are_import_errors(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ConsentImportError, match="not readable JSON"):
        read_fhir_consents(tmp_path / "x.json")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConsentImportError, match="missing columns"):
        read_csv_consents(tmp_path / "x.csv")


def test_fhir_round_trip_for_every_example() -> None:
    for name in ("permit", "deny", "nested", "expired", "withdrawn"):
        for consent in read_fhir_consents(FHIR / f"{name}.json"):
            assert consent_from_fhir(consent_to_fhir(consent)) == consent


def test_bad_csv_lists_every_bad_row_and_field() -> None:
    with pytest.raises(ConsentImportError) as info:
        read_csv_consents(VECTORS / "bad_consents.csv")
    got = {(p.location, p.field) for p in info.value.problems}
    assert ("line 3", "recorded_at") in got
    assert {
        ("line 4", "status"),
        ("line 4", "decision"),
        ("line 4", "purposes"),
        ("line 4", "commercial"),
    } <= got
    assert {("line 5", "period_end"), ("line 5", "subject"), ("line 5", "domains")} <= got
    assert not any(p.location == "line 2" for p in info.value.problems)


def test_csv_maps_to_fhir_semantics() -> None:
    rows = read_csv_consents(VECTORS / "consents.csv")
    permit, withdrawn, deny_all, deny_some, permit_all = rows
    assert permit.decision is DecisionType.DENY
    assert permit.provisions[0].purposes == ("HMB", "GRU", "NCU")
    assert permit.provisions[0].domains == ("births", "checkups")
    assert withdrawn.status is ConsentStatus.INACTIVE
    assert deny_all.decision is DecisionType.DENY and deny_all.provisions == ()
    assert deny_some.decision is DecisionType.PERMIT and len(deny_some.provisions) == 2
    when = at(2024, 3, 1)
    assert evaluate(permit, hmb(when)).permitted
    assert not evaluate(permit, hmb(when, domain="purchases")).permitted
    assert not evaluate(permit, hmb(when, commercial=True, requester_type="commercial")).permitted
    assert not evaluate(deny_all, hmb(when)).permitted
    assert evaluate(deny_some, hmb(when)).permitted  # GRU denied only in purchases
    assert not evaluate(deny_some, hmb(when, domain="purchases")).permitted
    assert not evaluate(
        deny_some, hmb(when, commercial=True, requester_type="commercial")
    ).permitted
    assert not evaluate(deny_some, hmb(at(2026, 3, 1))).permitted  # period over
    assert evaluate(permit_all, hmb(when, commercial=True, requester_type="commercial")).permitted


def test_registry_versions_history_and_point_in_time(tmp_path: Path, ledger: Ledger) -> None:
    registry = ConsentRegistry(tmp_path / "r.db", ledger=ledger)
    result = registry.import_csv(VECTORS / "consents.csv")
    assert (result.imported, result.subjects, len(result.ledger_indices)) == (5, 4, 5)
    kinds = [e.kind for e in ledger.entries()]
    assert kinds == [
        "consent.granted",
        "consent.withdrawn",
        "consent.granted",
        "consent.granted",
        "consent.granted",
    ]
    assert "0a1b2c3d" in {e.payload["subject"] for e in ledger.entries()}
    again = registry.import_csv(VECTORS / "consents.csv")
    assert (again.imported, again.unchanged) == (0, 5)  # re-import is harmless
    history = registry.history("0a1b2c3d")
    assert [c.version for c in history] == [1, 2]
    assert registry.current("0a1b2c3d", at(2023, 12, 31)) is None
    assert registry.current("0a1b2c3d", at(2024, 3, 1)).version == 1  # type: ignore[union-attr]
    assert registry.current("0a1b2c3d", at(2024, 7, 1)).status is ConsentStatus.INACTIVE  # type: ignore[union-attr]
    subjects = ["0a1b2c3d", "1b2c3d4e", "2c3d4e5f", "3d4e5f60", "nobody"]
    assert registry.permitted(subjects, hmb(at(2024, 3, 1))).tolist() == [
        True,
        False,
        True,
        True,
        False,
    ]
    assert registry.permitted(subjects, hmb(at(2024, 7, 1))).tolist() == [
        False,
        False,
        True,
        True,
        False,
    ]
    assert evaluate_many(registry, subjects, hmb(at(2024, 7, 1))).tolist() == [
        False,
        False,
        True,
        True,
        False,
    ]
    # a change recorded later creates version 3 and takes effect from its recorded_at
    (tmp_path / "again.csv").write_text(
        "subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end\n"
        "0a1b2c3d,2024-09-01T00:00:00Z,active,permit,GRU,yes,,,\n"
    )
    registry.import_csv(tmp_path / "again.csv")
    assert [c.version for c in registry.history("0a1b2c3d")] == [1, 2, 3]
    assert registry.permitted(["0a1b2c3d"], hmb(at(2024, 7, 1))).tolist() == [False]
    assert registry.permitted(["0a1b2c3d"], hmb(at(2024, 10, 1))).tolist() == [True]
    assert ledger.entries().__next__().index == 0
    assert [e.kind for e in ledger.entries(since=5)] == ["consent.granted"]


def test_registry_withdrawal_from_fhir_and_export_round_trip(tmp_path: Path) -> None:
    registry = ConsentRegistry(tmp_path / "r.db")
    for name in ("permit", "deny", "nested", "expired", "withdrawn"):
        registry.import_fhir(FHIR / f"{name}.json")
    assert registry.permitted(["e5f6a7b8"], hmb(at(2024, 3, 1))).tolist() == [True]
    assert registry.permitted(["e5f6a7b8"], hmb(at(2024, 6, 2))).tolist() == [False]
    history = registry.export_fhir(history=True)
    assert history["type"] == "history" and len(history["entry"]) == 6
    latest = registry.export_fhir()
    assert len(latest["entry"]) == 5
    (tmp_path / "export.json").write_text(json.dumps(history))
    copy = ConsentRegistry(tmp_path / "copy.db")
    copy.import_fhir(tmp_path / "export.json")
    for subject in registry.subjects():
        assert [c.model_dump() for c in copy.history(subject)] == [
            c.model_dump() for c in registry.history(subject)
        ]
    at_2024 = registry.export_fhir(at=at(2024, 3, 1))
    assert {e["resource"]["id"] for e in at_2024["entry"]} >= {"w1", "permit-hmb"}


def test_conflicting_rows_in_one_file_are_rejected(tmp_path: Path) -> None:
    c = Consent(
        id="c", subject="aa11", status="active", decision="permit", recorded_at=at(2024, 1, 1)
    )
    registry = ConsentRegistry(tmp_path / "r.db")
    with pytest.raises(ConsentImportError, match="other content"):
        registry.import_consents([c, c.model_copy(update={"decision": DecisionType.DENY})])
    assert len(registry) == 0


def test_history_cannot_be_overwritten(tmp_path: Path) -> None:
    import sqlite3

    registry = ConsentRegistry(tmp_path / "r.db")
    registry.import_csv(VECTORS / "consents.csv")
    registry.close()
    db = sqlite3.connect(tmp_path / "r.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE versions SET shape_id = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM versions")


def test_permitted_groups_many_subjects(tmp_path: Path) -> None:
    n = 3000
    consents = [
        Consent(
            id=f"c{i}",
            subject=f"s{i:05d}",
            status="active" if i % 3 else "inactive",
            decision="permit",
            recorded_at=at(2024, 1, 1),
        )
        for i in range(n)
    ]
    registry = ConsentRegistry(tmp_path / "r.db")
    registry.import_consents(consents)
    got = registry.permitted([c.subject for c in consents], hmb(at(2024, 2, 1)))
    assert got.sum() == n - n // 3 and isinstance(got, np.ndarray)


def test_csv_disease_specific_and_duo_ids(tmp_path: Path) -> None:
    (tmp_path / "ds.csv").write_text(
        "subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end\n"
        "aa01,2024-01-01T00:00:00Z,active,permit,DS:ICD10:P07;DUO:0000021,no,,,\n"
        "aa02,2024-01-01T00:00:00Z,active,permit,DS,no,,,\n"
    )
    with pytest.raises(ConsentImportError) as info:
        read_csv_consents(tmp_path / "ds.csv")
    assert [(p.location, p.field) for p in info.value.problems] == [("line 3", "purposes")]
    (tmp_path / "ds.csv").write_text(
        "\n".join((tmp_path / "ds.csv").read_text().splitlines()[:2]) + "\n"
    )
    (consent,) = read_csv_consents(tmp_path / "ds.csv")
    assert consent.provisions[0].purposes == ("DS", "IRB", "NCU")
    assert consent.provisions[0].diseases == ("ICD10:P07",)
    when = at(2024, 3, 1)
    lbw = UseRequest(codes=["DS", "IRB"], disease="ICD10:P07.1", time=when, domain="births")
    assert evaluate(consent, lbw).permitted
    assert not evaluate(consent, lbw.model_copy(update={"codes": ("DS",)})).permitted  # IRB needed
