"""The console over HTTP without a browser: sessions, role checks, CSRF, validation, language."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def world(
    tmp_path: Path, world_factory: Any, spec_toml: str
) -> Iterator[tuple[TestClient, dict[str, str], Any]]:
    app, tokens = world_factory(tmp_path / "coord", delay=0.0)
    app.state.console_test_spec = spec_toml
    with TestClient(app) as client:
        yield client, tokens, app


def _nonce(client: TestClient) -> str:
    page = client.get("/console/login").text
    return re.search(r'name="nonce" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def _login(client: TestClient, token: str) -> str:
    client.cookies.clear()
    r = client.post(
        "/console/login", data={"token": token, "nonce": _nonce(client)}, follow_redirects=False
    )
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def test_sign_in_sets_a_strict_httponly_session_not_the_token(world) -> None:
    client, tokens, _ = world
    assert (
        client.get("/console/jobs", follow_redirects=False).headers["location"] == "/console/login"
    )
    # Without the sign-in form's nonce (login CSRF) the token is not even checked.
    assert client.post("/console/login", data={"token": tokens["researcher"]}).status_code == 403
    r = client.post(
        "/console/login",
        data={"token": tokens["researcher"], "nonce": _nonce(client)},
        follow_redirects=False,
    )
    cookie = r.headers["set-cookie"]
    assert "hmn_session=" in cookie and tokens["researcher"] not in cookie
    session = next(c for c in r.headers.get_list("set-cookie") if c.startswith("hmn_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session
    assert (
        client.post(
            "/console/login", data={"token": "hmn_bad", "nonce": _nonce(client)}
        ).status_code
        == 401
    )


def test_each_page_checks_the_role(world) -> None:
    client, tokens, _ = world
    expected = {
        "researcher": {"/console/jobs": 200, "/console/node": 403, "/console/audit": 403},
        "node_admin": {"/console/jobs": 403, "/console/node": 200, "/console/audit": 403},
        "auditor": {"/console/jobs": 403, "/console/node": 403, "/console/audit": 200},
        "operator": {"/console/jobs": 403, "/console/node": 403, "/console/audit": 200},
    }
    for role, pages in expected.items():
        _login(client, tokens[role])
        for path, status in pages.items():
            assert client.get(path).status_code == status, (role, path)


def test_revoked_token_ends_the_session(world) -> None:
    client, tokens, app = world
    _login(client, tokens["auditor"])
    app.state.store.revoke_token(tokens["auditor"].split("_")[1])
    assert client.get("/console/audit", follow_redirects=False).status_code == 303


def test_posts_need_the_session_csrf_value(world) -> None:
    client, tokens, app = world
    _login(client, tokens["researcher"])
    spec = app.state.console_test_spec
    assert client.post("/console/jobs", data={"csrf": "x", "spec": spec}).status_code == 403
    assert app.state.store.list_jobs(None, None, 10, 0) == []


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (('"smoking"]', '"smoking", "nope"]'), "features"),
        (("epsilon = 2.0", "epsilon = 9.0"), "privacy.epsilon"),
        (("epsilon = 2.0", "epsilon = -1.0"), "privacy.epsilon"),
        (None, "spec"),
    ],
)
def test_invalid_spec_is_shown_by_its_field_and_not_stored(
    world, edit: tuple[str, str] | None, field: str
) -> None:
    client, tokens, app = world
    spec = app.state.console_test_spec.replace(*edit) if edit else "kind = "
    csrf = _login(client, tokens["researcher"])
    r = client.post("/console/jobs", data={"csrf": csrf, "spec": spec})
    assert r.status_code == 422 and f'data-field="{field}"' in r.text
    assert app.state.store.list_jobs(None, None, 10, 0) == []


def test_submit_approve_run_and_download(world) -> None:
    client, tokens, app = world
    csrf = _login(client, tokens["researcher"])
    r = client.post(
        "/console/jobs",
        data={"csrf": csrf, "spec": app.state.console_test_spec},
        follow_redirects=False,
    )
    job_id = r.headers["location"].rsplit("/", 1)[1]
    csrf = _login(client, tokens["node_admin"])
    page = client.get("/console/node").text
    assert job_id in page and "hokkaido-university" in page
    r = client.post(
        f"/console/node/jobs/{job_id}/decision", data={"csrf": csrf, "outcome": "reject"}
    )
    assert r.status_code == 422
    r = client.post(
        f"/console/node/jobs/{job_id}/decision",
        data={"csrf": csrf, "outcome": "approve"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    app.state.lifecycle.wait(job_id, 10)
    _login(client, tokens["researcher"])
    early = client.post(
        "/console/jobs",
        data={"csrf": _login(client, tokens["researcher"]), "spec": app.state.console_test_spec},
        follow_redirects=False,
    )
    early_id = early.headers["location"].rsplit("/", 1)[1]
    missing = client.get(f"/console/jobs/{early_id}/result.json")
    assert missing.status_code == 404 and "<h1>404</h1>" in missing.text
    body = client.get(f"/console/api/jobs/{job_id}").json()
    assert body["job"]["state"] == "succeeded" and [h["round"] for h in body["history"]] == [
        1,
        2,
        3,
    ]
    assert client.get(f"/console/jobs/{job_id}/result.json").json()["epsilon_by_node"] == {
        "city-hospital": 1.5
    }
    assert client.get(f"/console/jobs/{job_id}/plot.png").content.startswith(b"\x89PNG")
    # the result is the submitting researcher's: auditors see the job, its ε, not the result
    _login(client, tokens["auditor"])
    assert client.get(f"/console/jobs/{job_id}/result.json").status_code == 403
    assert client.get(f"/console/jobs/{job_id}/plot.png").status_code == 403
    seen = client.get(f"/console/api/jobs/{job_id}").json()
    assert seen["job"]["state"] == "succeeded" and seen["history"] == []
    assert 'id="dl-result"' not in client.get(f"/console/jobs/{job_id}").text
    _login(client, tokens["other"])
    assert client.get(f"/console/jobs/{job_id}").status_code == 403
    assert client.get(f"/console/api/jobs/{job_id}").status_code == 403
    missing = client.get("/console/jobs/0123456789abcdef")
    assert missing.status_code == 404 and "Not found." in missing.text


def test_language_switch_by_query_then_cookie(world) -> None:
    client, tokens, _ = world
    _login(client, tokens["researcher"])
    assert "<h1>研究者</h1>" in client.get("/console/jobs?lang=ja").text
    assert "<h1>研究者</h1>" in client.get("/console/jobs").text
    assert "<h1>Researcher</h1>" in client.get("/console/jobs?lang=en").text


def test_chart_library_is_served_locally_with_its_license(world) -> None:
    client, _, _ = world
    js = client.get("/console/static/chart.umd.js")
    assert js.status_code == 200 and "Released under the MIT License" in js.text[:300]
    assert "MIT" in client.get("/console/static/chart.js.LICENSE.md").text


def test_node_admin_releases_a_held_result(world) -> None:
    client, tokens, app = world
    from federation.api_models import NodeRegistration

    app.state.store.publish_node("city-hospital", NodeRegistration(release_review="admin"))
    csrf = _login(client, tokens["researcher"])
    r = client.post(
        "/console/jobs",
        data={"csrf": csrf, "spec": app.state.console_test_spec},
        follow_redirects=False,
    )
    job_id = r.headers["location"].rsplit("/", 1)[1]
    csrf = _login(client, tokens["node_admin"])
    client.post(f"/console/node/jobs/{job_id}/decision", data={"csrf": csrf, "outcome": "approve"})
    app.state.lifecycle.wait(job_id, 10)
    page = client.get("/console/node").text
    assert f'id="held-{job_id}"' in page
    bad = client.post(
        f"/console/node/jobs/{job_id}/release", data={"csrf": csrf, "decision": "withhold"}
    )
    assert bad.status_code == 422 and "needs a reason" in bad.text
    _login(client, tokens["researcher"])
    assert client.get(f"/console/jobs/{job_id}/result.json").status_code != 200
    csrf = _login(client, tokens["node_admin"])
    ok = client.post(
        f"/console/node/jobs/{job_id}/release",
        data={"csrf": csrf, "decision": "release"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and f'id="held-{job_id}"' not in client.get("/console/node").text
    _login(client, tokens["researcher"])
    assert client.get(f"/console/jobs/{job_id}/result.json").status_code == 200


def test_node_admin_sees_subjects_after_consent_and_the_policy_reasons(world) -> None:
    from federation.api_models import DecisionCreate, DecisionReason

    client, tokens, app = world
    csrf = _login(client, tokens["researcher"])
    r = client.post(
        "/console/jobs",
        data={"csrf": csrf, "spec": app.state.console_test_spec},
        follow_redirects=False,
    )
    job_id = r.headers["location"].rsplit("/", 1)[1]
    _login(client, tokens["node_admin"])
    assert "not counted yet" in client.get("/console/node").text
    app.state.lifecycle.decide(
        job_id,
        "city-hospital",
        DecisionCreate(
            outcome="needs_approval",
            source="policy",
            reasons=[
                DecisionReason(code="manual_approval", message="this node approves by hand"),
                DecisionReason(
                    code="subjects_after_consent", message="153 subjects after consent filtering"
                ),
            ],
        ),
        "city-hospital-service",
    )
    page = client.get("/console/node").text
    review = page[page.index(f'id="review-{job_id}"') :]
    assert '<dd class="subjects">153</dd>' in review
    assert "this node approves by hand" in review


def test_long_rejection_reason_is_kept_whole_or_cut_with_a_note(world) -> None:
    client, tokens, app = world
    csrf = _login(client, tokens["researcher"])
    spec = app.state.console_test_spec
    r = client.post("/console/jobs", data={"csrf": csrf, "spec": spec}, follow_redirects=False)
    job_id = r.headers["location"].rsplit("/", 1)[1]
    csrf = _login(client, tokens["node_admin"])
    clauses = [f"clause {i} of the admin's reason, kept whole" for i in range(200)]
    reason = "; ".join(clauses)
    r = client.post(
        f"/console/node/jobs/{job_id}/decision",
        data={"csrf": csrf, "outcome": "reject", "reason": reason},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text[:300]
    job = app.state.store.get_job(job_id)[0]
    (stored,) = [a for a in job.approvals if a.status == "rejected"][0].reasons
    kept, note = stored.message.split(" … ")
    assert len(reason) > len(stored.message) and reason.startswith(kept)
    assert (
        kept.endswith("kept whole") and note == f"[{len(reason) - len(kept)} more characters cut]"
    )
