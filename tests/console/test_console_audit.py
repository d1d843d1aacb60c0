"""The auditor's ledger views and the node admin's budget over HTTP (no browser): role checks,
filters, the proof JSON the page checks, suppressed counts, labels in both languages."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from consent.signing import SignedTreeHead, load_public_key
from consent.verify import verify_entry


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, world_factory: Any
) -> Iterator[tuple[TestClient, dict[str, str], Any]]:
    app, tokens = world_factory(tmp_path_factory.mktemp("audit") / "coord", delay=0.0, audit=True)
    with TestClient(app) as client:
        yield client, tokens, app


def _login(client: TestClient, token: str) -> None:
    client.cookies.clear()
    page = client.get("/console/login").text
    nonce = re.search(r'name="nonce" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = client.post("/console/login", data={"token": token, "nonce": nonce}, follow_redirects=False)
    assert r.status_code == 303


def test_only_auditors_open_the_ledger_views(world) -> None:
    client, tokens, _ = world
    paths = (
        "/console/audit/nodes/city-hospital",
        "/console/api/audit/nodes/city-hospital/ledger/0/proof",
    )
    client.cookies.clear()
    assert client.get(paths[0], follow_redirects=False).status_code == 303  # to sign-in
    assert client.get(paths[1]).status_code == 401
    for role in ("researcher", "node_admin"):
        _login(client, tokens[role])
        for path in paths:
            r = client.get(path)
            assert r.status_code == 403, (role, path)
        assert "needs auditor or operator" in r.json()["detail"]
    for role in ("auditor", "operator"):
        _login(client, tokens[role])
        assert all(client.get(p).status_code == 200 for p in paths), role
    assert client.get("/console/audit/nodes/nowhere").status_code == 404
    assert client.get("/console/api/audit/nodes/city-hospital/ledger/999/proof").status_code == 404


def test_audit_page_shows_heads_checks_and_suppressed_counts(world) -> None:
    client, tokens, _ = world
    _login(client, tokens["auditor"])
    page = client.get("/console/audit?lang=en").text
    row = re.search(r'<tr id="ledger-city-hospital">.*?</tr>', page, re.S).group(0)  # type: ignore[union-attr]
    assert "✓ verified" in row and ">65<" in row
    assert "not checked yet" in page
    table = re.search(
        r'<table class="consent" id="consent-city-hospital".*?</table>', page, re.S
    ).group(0)  # type: ignore[union-attr]
    assert 'data-purpose="GRU" data-domain="births">40<' in table
    assert "fewer than 10 (suppressed)" in table and "by difference" in table
    assert ">52<" not in table and ">8<" not in table  # HMB (52 of 60) would reveal 8
    ja = client.get("/console/audit?lang=ja").text
    assert "各ノードの署名付き台帳" in ja and "10未満（秘匿）" in ja


def test_ledger_browser_filters_and_the_proof_the_page_checks(world) -> None:
    client, tokens, app = world
    _login(client, tokens["auditor"])
    page = client.get("/console/audit/nodes/city-hospital?kind=budget.reserved&order=asc").text
    assert re.findall(r'<tr id="entry-(\d+)">', page) == ["60", "63"]
    assert "Entries 1–2 of 2" in page
    first = client.get("/console/audit/nodes/city-hospital").text
    assert re.findall(r'<tr id="entry-(\d+)">', first)[:2] == ["64", "63"]  # newest first
    assert 'rel="next" href="?order=desc&amp;offset=25"' in first
    bad = client.get("/console/audit/nodes/city-hospital?since=yesterday")
    assert bad.status_code == 422 and 'aria-invalid="true"' in bad.text
    window = client.get(
        "/console/audit/nodes/city-hospital?since=2000-01-01T00:00&until=2000-01-02T00:00"
    )
    assert window.status_code == 200 and "No entry matches." in window.text
    proof = client.get("/console/api/audit/nodes/city-hospital/ledger/60/proof").json()
    point = app.state.console_test_point
    verify_entry(
        base64.b64decode(proof["data"]),
        60,
        [bytes.fromhex(h) for h in proof["proof"]],
        SignedTreeHead.model_validate(proof["head"]),
        load_public_key(point.state.public_key_path),
    )
    assert (
        proof["head_timestamp_text"].endswith("Z") and "BEGIN PUBLIC KEY" in proof["public_key_pem"]
    )


def test_node_admin_sees_its_budget_table(world, tmp_path: Path, world_factory: Any) -> None:
    client, tokens, _ = world
    _login(client, tokens["node_admin"])
    page = client.get("/console/node").text
    row = re.search(r'<tr id="budget-births-\d{4}">.*?</tr>', page, re.S).group(0)  # type: ignore[union-attr]
    cells = re.findall(r'<td class="num">([^<]+)</td>', row)
    assert cells[:4] == ["1.500", "2.000", "10.000", "7.000"] and "(current)" in row
    assert 'id="budget-chart"' in page and "ε reserved (active jobs)" in page
    # A node whose service has not pushed anything says so.
    app, other = world_factory(tmp_path / "coord", delay=0.0)
    with TestClient(app) as fresh:
        _login(fresh, other["node_admin"])
        assert "has not published its budget yet" in fresh.get("/console/node").text


def test_consent_events_stay_at_the_node_and_still_prove_inclusion(world) -> None:
    """A consent event names a resident's pseudonym: the coordinator mirrors its leaf only."""
    from consent.merkle import verify_inclusion_proof

    client, tokens, app = world
    _login(client, tokens["auditor"])
    point = app.state.console_test_point
    ledger = point.ledger()
    consent = next(ledger.entries("consent.granted"))
    subject = consent.payload["subject"]
    proof = client.get(f"/console/api/audit/nodes/city-hospital/ledger/{consent.index}/proof")
    body = proof.json()
    assert body["data"] is None and body["leaf_hash"] == ledger.leaf_hash(consent.index).hex()
    head = SignedTreeHead.model_validate(body["head"])
    verify_inclusion_proof(
        bytes.fromhex(body["leaf_hash"]),
        consent.index,
        head.tree_size,
        [bytes.fromhex(h) for h in body["proof"]],
        bytes.fromhex(head.root_hash),
    )
    page = client.get("/console/audit/nodes/city-hospital?kind=consent.granted").text
    assert "kept at the node" in page and subject not in page
    from sqlalchemy import text

    with app.state.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT data FROM node_ledger_entries")).all()
    assert rows and all(subject.encode() not in bytes(r[0]) for r in rows)
