"""The consoles' shared plumbing on a bare app: login nonce, session cookie, CSRF, labels,
headers, the shared login page and stylesheet."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient

from federation.web import ConsoleCookies, ConsoleShell, console_csp, with_shared

COOKIES = ConsoleCookies(session="s", lang="l", login="n")


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    (tmp_path / "base.html").write_text(
        "<title>{{ t.title }}</title>{% block title %}{% endblock %}{% block main %}{% endblock %}"
    )
    labels = {
        "en": {"title": "T", "token": "Token", "token_help": "h", "bad_token": "no"},
        "ja": {"title": "T", "token": "トークン", "token_help": "h", "bad_token": "no"},
    }
    shell = ConsoleShell(
        tmp_path, with_shared(labels), COOKIES, csp=console_csp(scripts=False, data_images=False)
    )
    app = FastAPI()

    @app.get("/console/login")
    def form(request: Request) -> Response:
        return shell.login_page(request)

    @app.post("/console/login")
    async def login(request: Request) -> Response:
        body = await shell.form(request)
        if not shell.login_nonce_ok(request, body):
            return shell.login_page(request, 403, "expired")
        return shell.sign_in(request, "/console/", token=body.get("token"))

    @app.post("/console/act")
    async def act(request: Request) -> Response:
        session = shell.session(request)
        if session is None:
            return Response(status_code=401)
        ok = shell.csrf_ok(session, await shell.form(request))
        return Response(session.token or "", status_code=200 if ok else 403)

    @app.get("/console/csrf")
    def csrf(request: Request) -> Response:
        session = shell.session(request)
        return Response(session.csrf if session else "", status_code=200 if session else 401)

    @app.post("/console/logout")
    def logout(request: Request) -> Response:
        return shell.sign_out(request)

    shell.mount_static(app, "static")
    return TestClient(app, follow_redirects=False)


def _nonce(client: TestClient) -> str:
    page = client.get("/console/login?lang=ja")
    assert page.status_code == 200 and "トークン" in page.text and "サインイン" in page.text
    assert page.headers["content-security-policy"].count("'none'") == 2
    assert page.headers["cache-control"] == "no-store"
    assert page.cookies.get("l") == "ja"
    return page.text.split('name="nonce" value="')[1].split('"')[0]


def test_sign_in_needs_the_login_nonce_and_opens_a_session(client: TestClient) -> None:
    assert client.post("/console/login", data={"token": "x", "nonce": "forged"}).status_code == 403
    nonce = _nonce(client)
    signed = client.post("/console/login", data={"token": "tok", "nonce": nonce})
    assert signed.status_code == 303 and "s" in signed.cookies
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    csrf = client.get("/console/csrf").text
    assert client.post("/console/act", data={"csrf": "wrong"}).status_code == 403
    done = client.post("/console/act", data={"csrf": csrf})
    assert done.status_code == 200 and done.text == "tok"
    client.post("/console/logout")
    assert client.post("/console/act", data={"csrf": csrf}).status_code == 401


def test_the_shared_stylesheet_is_served(client: TestClient) -> None:
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and "--accent" in css.text


def test_a_console_cannot_redefine_a_shared_label() -> None:
    with pytest.raises(ValueError, match="sign_in"):
        with_shared({"en": {"sign_in": "Log in"}, "ja": {}})
    with pytest.raises(ValueError, match="ja"):
        with_shared({"en": {}})


def test_csp_allows_only_what_the_console_asks_for() -> None:
    strict = console_csp(scripts=False, data_images=False)
    assert "script-src 'none'" in strict and "data:" not in strict
    charts = console_csp(scripts=True, data_images=True)
    assert "script-src 'self'" in charts and "img-src 'self' data:" in charts
