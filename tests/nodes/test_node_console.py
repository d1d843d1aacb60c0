"""The node's small console over HTTP: sign-in with the node admin's token, CSRF on every form,
waiting jobs with what they would use, approve / reject with a reason (seen by the
coordinator), release review, budget table and PNG chart, policy, ledger head and verify,
the ja/en switch, and the coordinator being down."""

from __future__ import annotations

import re
import socket

import httpx
from fastapi.testclient import TestClient

from nodes.admin_api import create_admin_app
from nodes.console import SESSION_COOKIE
from nodes.service import CoordinatorLink, NodeService


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def _sign_in(client: TestClient, token: str) -> TestClient:
    page = client.get("/console/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
    r = client.post("/console/login", data={"nonce": nonce, "token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/jobs", r.text
    return client


def test_sign_in_needs_the_node_admins_token(admin_world) -> None:
    w = admin_world
    client = TestClient(w.admin_app)
    r = client.get("/console/jobs", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    page = client.get("/console/login")
    assert '<label for="token">' in page.text and 'type="password"' in page.text
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
    for token in ("wrong", w.tokens["researcher"], ""):
        bad = client.post("/console/login", data={"nonce": nonce, "token": token})
        assert bad.status_code == 401 and 'role="alert"' in bad.text
        assert SESSION_COOKIE not in client.cookies
        nonce = re.search(r'name="nonce" value="([^"]+)"', bad.text).group(1)  # a fresh form
    # without the login form's nonce (a cross-site post) the token is not even tried
    fresh = TestClient(w.admin_app)
    r = fresh.post("/console/login", data={"nonce": "x", "token": w.tokens["node_admin"]})
    assert r.status_code == 403 and SESSION_COOKIE not in fresh.cookies
    _sign_in(client, w.tokens["node_admin"])
    jar = client.cookies.jar
    cookie = next(c for c in jar if c.name == SESSION_COOKIE)
    assert cookie.value != w.tokens["node_admin"]
    page = client.get("/console/jobs")
    assert page.status_code == 200 and w.tokens["node_admin"] not in page.text
    assert "script" not in page.headers["content-security-policy"].replace("script-src 'none'", "")


def test_console_shows_a_waiting_job_and_approves_it(admin_world) -> None:
    w = admin_world
    job_id = w.submit(2.0)
    w.service.poll_once()
    expected = w.api.get(f"/jobs/{job_id}", headers=w.h()).json()
    client = _sign_in(TestClient(w.admin_app), w.tokens["node_admin"])
    page = client.get("/console/jobs")
    assert page.status_code == 200
    assert job_id in page.text and "hokkaido-university" in page.text
    assert "<code>maternal_age</code>" in page.text
    subjects = re.search(r'class="subjects">(\d+)<', page.text)
    assert subjects and int(subjects.group(1)) == expected["subjects_after_consent"]
    assert f'<label for="reject-{job_id}">' in page.text
    assert f'id="reject-{job_id}"' in page.text
    # a form without the session's CSRF value is refused and changes nothing
    r = client.post(f"/console/jobs/{job_id}/approve", data={"csrf": "forged"})
    assert r.status_code == 403
    assert w.approval(job_id).status == "needs_approval"
    r = client.post(
        f"/console/jobs/{job_id}/approve",
        data={"csrf": _csrf(page.text), "reason": "IRB 2026-14"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    approval = w.approval(job_id)
    assert approval.status == "approved" and approval.source == "admin"
    assert [x.message for x in approval.reasons] == ["IRB 2026-14"]
    after = client.get("/console/jobs")
    assert f"Approved job {job_id}" in after.text and 'role="status"' in after.text


def test_console_reject_needs_a_reason_shown_next_to_the_field(admin_world) -> None:
    w = admin_world
    job_id = w.submit()
    w.service.poll_once()
    client = _sign_in(TestClient(w.admin_app), w.tokens["node_admin"])
    csrf = _csrf(client.get("/console/jobs").text)
    r = client.post(f"/console/jobs/{job_id}/reject", data={"csrf": csrf, "reason": "  "})
    assert r.status_code == 422
    assert "A rejection needs a reason." in r.text
    assert f'aria-describedby="job-{job_id}-error"' in r.text
    assert w.approval(job_id).status == "needs_approval"
    r = client.post(
        f"/console/jobs/{job_id}/reject",
        data={"csrf": csrf, "reason": "outside our consent scope"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert w.approval(job_id).status == "rejected"


def test_console_in_japanese(admin_world) -> None:
    w = admin_world
    w.submit()
    w.service.poll_once()
    client = _sign_in(TestClient(w.admin_app), w.tokens["node_admin"])
    page = client.get("/console/jobs?lang=ja")
    assert '<html lang="ja">' in page.text
    assert (
        "このノードの判断を待つジョブ" in page.text and "同意で絞り込んだ後の対象者数" in page.text
    )
    # the choice is remembered by a cookie
    assert "却下の理由" in client.get("/console/jobs").text
    assert "データ領域ごとのプライバシー予算" in client.get("/console/budget").text
    english = client.get("/console/policy?lang=en")
    assert '<html lang="en">' in english.text and "Policy in force" in english.text


def test_console_budget_policy_and_ledger(admin_world) -> None:
    w = admin_world
    client = _sign_in(TestClient(w.admin_app), w.tokens["node_admin"])
    budget = client.get("/console/budget")
    assert budget.status_code == 200
    assert '<tr data-domain="births">' in budget.text and "<caption>" in budget.text
    chart = client.get("/console/budget.png")
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG\r\n\x1a\n")
    earlier = client.get("/console/budget?at=2020-05-01")
    assert earlier.status_code == 200 and ">2020<" in earlier.text
    bad = client.get("/console/budget?at=yesterday")
    assert bad.status_code == 422 and 'id="at-error"' in bad.text

    for path in ("/console/jobs", "/console/budget", "/console/policy", "/console/ledger"):
        html = client.get(path).text  # works offline: nothing loads from another origin
        assert not re.search(r'(src|href)="(https?:)?//', html), path
    policy = client.get("/console/policy")
    assert policy.status_code == 200 and "<code>manual</code>" in policy.text

    ledger = client.get("/console/ledger")
    size = int(re.search(r'id="ledger-size">(\d+)<', ledger.text).group(1))
    assert size == w.api.get("/ledger/head", headers=w.h()).json()["size"]
    before = len(w.point.ledger().heads())
    r = client.post(
        "/console/ledger/sign", data={"csrf": _csrf(ledger.text)}, follow_redirects=False
    )
    assert r.status_code == 303 and len(w.point.ledger().heads()) == before + 1
    verified = client.get("/console/ledger?verify=1")
    assert "The ledger verifies" in verified.text


def test_console_release_review(make_admin_world) -> None:
    import time

    w = make_admin_world(release_review="admin")
    job_id = w.submit(1.0)
    w.service.poll_once()
    assert w.api.post(f"/jobs/{job_id}/approve", headers=w.h()).status_code == 200
    while w.coordinator.state.store.get_job(job_id)[0].state != "succeeded":
        time.sleep(0.05)
    client = _sign_in(TestClient(w.admin_app), w.tokens["node_admin"])
    page = client.get("/console/jobs")
    assert f'id="held-{job_id}"' in page.text
    csrf = _csrf(page.text)
    r = client.post(f"/console/releases/{job_id}/withhold", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422 and "A withheld result needs a reason." in r.text
    r = client.post(
        f"/console/releases/{job_id}/withhold",
        data={"csrf": csrf, "reason": "cell below 10"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert [e.payload["decision"] for e in w.point.ledger().entries(kind="result.withheld")] == [
        "withhold"
    ]


def test_console_says_when_the_coordinator_is_down(admin_world) -> None:
    w = admin_world
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    service = NodeService(w.service.config, CoordinatorLink(client, "city-hospital"))
    app = create_admin_app(service, token="local-admin")
    console = _sign_in(TestClient(app), "local-admin")
    page = console.get("/console/jobs")
    assert page.status_code == 503 and 'id="coordinator-down"' in page.text
    assert console.get("/console/budget").status_code == 200
