"""The node's audit snapshot (issue 7): what its service pushes every poll.

The ledger entries go as stored (canonical bytes, index, kind, time) in bounded chunks; a new
head is signed when the ledger grew; consent counts under the policy's minimum cell never leave
the node (nor counts that would reveal one by difference); the budget goes per domain and period.
"""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consent.ledger import Ledger
from consent.model import Consent, Provision
from coordinator.api import bootstrap_operator, create_app
from coordinator.settings import load_settings
from federation.audit_models import ConsentCount, ConsentSummary, LedgerEntryWire
from nodes.audit_publish import AuditPublisher, push_audit_snapshot, suppress_counts
from nodes.cli import init_node
from nodes.enforcement import EnforcementPoint
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig

POLICY = """\
min_cohort = 20
min_cell_count = 10
require_dp = true
[purposes]
allowed = ["GRU", "HMB"]
[domains.births]
features = "*"
[domains.checkups]
features = "*"
[budget.births]
epsilon = 10.0
period = "year"
[budget.checkups]
epsilon = 5.0
period = "month"
"""


@pytest.fixture
def point(tmp_path: Path) -> EnforcementPoint:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    init_node(tmp_path / "n0", "n0", policy)
    return EnforcementPoint("n0", tmp_path / "n0")


def _consents(n_gru: int, n_hmb: int, n_deny: int, births_only: int = 0) -> list[Consent]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n_gru + n_hmb + n_deny):
        purposes = ("GRU",) if i < n_gru else ("HMB",) if i < n_gru + n_hmb else ()
        domains = ("births",) if i < births_only else ()
        out.append(
            Consent(
                id=f"c-{i}",
                subject=f"s{i:04d}",
                status="active",
                decision="deny",
                provisions=(Provision(purposes=purposes, domains=domains),) if purposes else (),
                recorded_at=start + timedelta(minutes=i),
            )
        )
    return out


# -- minimum-cell rule --------------------------------------------------------------------------
def test_suppress_counts_small_and_by_difference() -> None:
    counts = {("GRU", "b"): 40, ("HMB", "b"): 52, ("NRES", "b"): 3, ("CC", "b"): 0}
    shown, why, total = suppress_counts(counts, 60, 10)
    assert shown == {("GRU", "b"): 40, ("HMB", "b"): None, ("NRES", "b"): None, ("CC", "b"): None}
    assert why == {("HMB", "b"): "difference", ("NRES", "b"): "small", ("CC", "b"): "small"}
    assert total == 60
    assert suppress_counts({("GRU", None): 5}, 8, 10) == (
        {("GRU", None): None},
        {("GRU", None): "small"},
        None,
    )


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.tuples(st.sampled_from(["NRES", "GRU", "HMB", "POA"]), st.sampled_from(["a", "b", "c"])),
        st.integers(0, 200),
        max_size=12,
    ),
    st.integers(0, 300),
    st.integers(1, 30),
)
def test_no_shown_count_nor_related_difference_is_under_the_minimum_cell(counts, extra, k) -> None:
    subjects = max(counts.values(), default=0) + extra
    shown, why, total = suppress_counts(counts, subjects, k)
    visible = {key: v for key, v in shown.items() if v is not None}
    assert all(v >= k for v in visible.values())
    assert set(why) == {key for key, v in shown.items() if v is None}
    if total is not None:
        visible[("*", "*")] = total
    for (ka, va), (kb, vb) in itertools.combinations(visible.items(), 2):
        related = "*" in (ka[0], kb[0]) or ka[0] == kb[0] or ka[1] == kb[1]
        assert not (related and 0 < abs(va - vb) < k), (ka, va, kb, vb)


def test_consent_summary_counts_now_and_suppresses_on_the_node(point: EnforcementPoint) -> None:
    point.registry().import_consents(_consents(40, 12, 8, births_only=15), "t", point.ledger())
    summary = AuditPublisher(point).consent_summary(datetime(2026, 6, 1, tzinfo=UTC))
    cells = {(c.purpose, c.domain): c for c in summary.counts}
    assert summary.min_cell_count == 10 and summary.subjects == 60
    assert cells[("GRU", "births")].count == 40 and cells[("POA", "births")].count == 40
    assert cells[("GRU", "checkups")].count == 25  # 15 GRU consents are for births only
    assert cells[("HMB", "births")].suppression == "difference"  # 52 of 60: 8 would show
    assert (
        cells[("NRES", "births")].count is None and cells[("NRES", "births")].suppression == "small"
    )
    assert all(c.count is None or c.count >= 10 for c in summary.counts)
    # Before any consent was recorded nobody is permitted: everything is suppressed.
    early = AuditPublisher(point).consent_summary(datetime(2025, 1, 1, tzinfo=UTC))
    assert all(c.suppressed for c in early.counts)


def test_wire_model_refuses_a_small_count() -> None:
    with pytest.raises(ValidationError, match="minimum cell"):
        ConsentSummary(
            at=datetime.now(UTC),
            min_cell_count=10,
            counts=[ConsentCount(purpose="GRU", count=3, suppressed=False)],
        )
    with pytest.raises(ValidationError, match="suppressed"):
        ConsentCount(purpose="GRU", count=30, suppressed=True, suppression="small")
    with pytest.raises(ValidationError, match="minimum cell"):
        ConsentSummary(at=datetime.now(UTC), min_cell_count=10, subjects=4)


# -- ledger and budget ---------------------------------------------------------------------------
def test_head_is_signed_when_the_ledger_grew_past_it(point: EnforcementPoint) -> None:
    ledger = point.ledger()
    ledger.append("job.note", {"i": 1})
    assert ledger.latest_head().tree_size == 1
    Ledger(point.state.ledger_path).append("job.note", {"i": 2})  # another process, no key
    publisher = AuditPublisher(point)
    head = publisher.head()
    assert head.tree_size == 2 and head.root_hash == ledger.root().hex()
    assert publisher.head() == head  # not re-signed while nothing changed


def test_entries_go_as_stored(point: EnforcementPoint) -> None:
    ledger = point.ledger()
    for i in range(5):
        ledger.append("job.note", {"i": i}, datetime(2026, 1, 2, 3, 4, 5, i, tzinfo=UTC))
    wire = AuditPublisher(point).entries(1, 4)
    assert [e.index for e in wire] == [1, 2, 3]
    assert base64.b64decode(wire[0].data) == ledger.entry_bytes(1)
    assert wire[0].at == "2026-01-02T03:04:05.000001Z" and wire[0].kind == "job.note"


def test_consent_events_leave_the_node_as_leaf_hashes_only(point: EnforcementPoint) -> None:
    ledger = point.ledger()
    subject = "ab" * 16
    ledger.append(
        "consent.granted",
        {
            "subject": subject,
            "consent_id": "c-1",
            "version": 1,
            "status": "active",
            "decision": "permit",
            "recorded_at": "2026-01-02T03:04:05Z",
            "content_hash": "0" * 64,
        },
    )
    ledger.append("job.note", {"i": 1})
    wire = AuditPublisher(point).entries(0, 2)
    assert wire[0].data is None and wire[0].leaf == ledger.leaf_hash(0).hex()
    assert subject not in wire[0].model_dump_json()
    assert wire[1].data is not None
    with pytest.raises(ValueError):
        LedgerEntryWire(index=1, kind="job.note", at=wire[1].at, leaf="0" * 64)


def test_budget_rows_per_domain_and_period(point: EnforcementPoint) -> None:
    budget = point.budget()
    past = datetime(2025, 3, 1, tzinfo=UTC)
    budget.reserve("old", "births", 2.0, 1e-6, past)
    budget.charge("old", 0, {"type": "pure", "epsilon": 1.5}, at=past)
    budget.release("old", "finished", past)
    now = datetime(2026, 5, 10, tzinfo=UTC)
    budget.reserve("new", "births", 3.0, 1e-6, now)
    rows = {(r.domain, r.period): r for r in AuditPublisher(point).budget_rows(now)}
    assert set(rows) == {("births", "2026"), ("checkups", "2026-05"), ("births", "2025")}
    assert rows[("births", "2026")].reserved_epsilon == pytest.approx(3.0)
    assert rows[("births", "2026")].current and not rows[("births", "2025")].current
    assert rows[("births", "2025")].spent_epsilon == pytest.approx(1.5)
    assert rows[("checkups", "2026-05")].epsilon_cap == 5.0


# -- pushing -------------------------------------------------------------------------------------
@pytest.fixture
def coordinator(tmp_path: Path, point: EnforcementPoint):
    app = create_app(load_settings(data_dir=tmp_path / "coord"))
    op = bootstrap_operator(app.state.store).token
    with TestClient(app) as http:
        oh = {"Authorization": f"Bearer {op}"}
        assert http.post("/nodes", json={"name": "n0"}, headers=oh).status_code == 201
        r = http.post("/nodes/n0/service-token", headers=oh)  # the node service pushes
        service = r.json()["token"]
        r = http.post("/principals", json={"name": "aud", "role": "auditor"}, headers=oh)
        auditor = {"Authorization": f"Bearer {r.json()['token']['token']}"}
        yield app, http, service, auditor


class _Counting(TestClient):
    posts = 0

    def post(self, *args: Any, **kwargs: Any) -> Any:
        type(self).posts += 1
        return super().post(*args, **kwargs)


def _check(response: Any) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def test_a_backlog_goes_in_bounded_chunks_over_polls(point: EnforcementPoint, coordinator) -> None:
    app, http, service, auditor = coordinator
    pem = point.state.public_key_path.read_text()
    http.put(
        "/nodes/n0/registration",
        json={"public_key_pem": pem},
        headers={"Authorization": f"Bearer {service}"},
    )
    point.ledger().append_many([("job.note", {"i": i}) for i in range(1200)])
    client = _Counting(app, headers={"Authorization": f"Bearer {service}"})
    first = push_audit_snapshot(client, "n0", point, _check, max_entries=700)
    assert first.status == "incomplete" and first.staged_size == 700 and first.verified_size == 0
    assert _Counting.posts == 2  # 500 + 200
    assert http.get("/audit/nodes/n0/ledger", headers=auditor).json()["total"] == 0  # unverified
    second = push_audit_snapshot(client, "n0", point, _check, max_entries=700)
    assert second.status == "verified" and second.verified_size == 1200
    third = push_audit_snapshot(client, "n0", point, _check)
    assert third.status == "verified" and _Counting.posts == 3  # nothing more to send
    checks = http.get("/audit/nodes/n0/checks", headers=auditor).json()
    assert len(checks) == 1 and checks[0]["checks"] == 2  # the same head, checked twice


def test_poll_once_pushes_the_snapshot(point: EnforcementPoint, coordinator, tmp_path) -> None:
    app, http, service, auditor = coordinator
    point.registry().import_consents(_consents(30, 0, 0), "t", point.ledger())
    cfg = NodeServiceConfig(
        name="n0", coordinator_url="http://testserver", state_dir=point.state.root
    )
    link = CoordinatorLink(TestClient(app, headers={"Authorization": f"Bearer {service}"}), "n0")
    NodeService(cfg, link).poll_once()
    node = http.get("/audit/nodes", headers=auditor).json()[0]
    assert node["verified_size"] == point.ledger().size == 30
    assert node["last_check"]["result"] == "verified" and not node["flagged"]
    consent = http.get("/audit/nodes/n0/consent", headers=auditor).json()["summary"]
    assert {c["purpose"]: c["count"] for c in consent["counts"] if c["domain"] == "births"}[
        "GRU"
    ] == 30
    budget = http.get("/nodes/n0/budget", headers={"Authorization": f"Bearer {service}"}).json()
    assert {r["domain"] for r in budget["rows"]} == {"births", "checkups"}
