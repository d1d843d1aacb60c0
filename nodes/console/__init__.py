"""The node's small web console, on its admin app under ``/console/`` (loopback only)."""

from __future__ import annotations

import io
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from federation.web_sessions import Session, SessionStore
from nodes.admin_actions import AdminError
from nodes.console.i18n import STRINGS, pick_lang

if TYPE_CHECKING:
    from nodes.admin_actions import NodeAdmin
    from policies import BudgetStatus

__all__ = ["SESSION_COOKIE", "budget_chart_png", "mount_console"]

HERE = Path(__file__).parent
SESSION_COOKIE = "hmn_node_session"
LANG_COOKIE = "hmn_node_lang"
LOGIN_COOKIE = "hmn_node_login"


class _NeedLogin(Exception):
    pass


class _CsrfFailed(Exception):
    pass


def _lang(request: Request) -> str:
    return pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:200_000].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def budget_chart_png(rows: list[BudgetStatus]) -> bytes:
    """Draw the budget per domain as stacked horizontal bars (used, reserved, left) in a PNG.

    Returns:
        The PNG bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.6 * max(len(rows), 1) + 1.4), dpi=100)
    ax = fig.add_subplot()
    names = [r.domain for r in rows]
    used = [max(r.closed_epsilon, 0.0) for r in rows]
    reserved = [max(r.reserved_epsilon, 0.0) for r in rows]
    left = [max(r.remaining_epsilon, 0.0) for r in rows]
    ax.barh(names, used, color="#a4161a", label="used (finished jobs)")
    ax.barh(names, reserved, left=used, color="#e0a800", label="reserved (running jobs)")
    starts = [u + r for u, r in zip(used, reserved, strict=True)]
    ax.barh(names, left, left=starts, color="#1b5e20", label="left")
    ax.set_xlabel("epsilon")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _parse_day(value: str | None) -> datetime | None:
    """A ``YYYY-MM-DD`` date as noon UTC that day; None when empty.

    Raises:
        ValueError: not a date.
    """
    if not value:
        return None
    day = datetime.strptime(value, "%Y-%m-%d")
    return day.replace(hour=12, tzinfo=UTC)


def mount_console(app: FastAPI, admin: NodeAdmin, token: str) -> None:
    """Add the console's routes, templates and static files to the node's admin app.

    Sign-in with the node admin's token (compared in constant time; the browser then holds
    only a random session id in an HttpOnly, SameSite=Strict cookie); every form carries a
    CSRF value bound to the session. Pages: jobs waiting for this node with what they would
    use (purpose, features, ε, subjects after consent filtering, the policy's verdict) and
    approve / reject with a reason, results held for release review; the budget per domain
    and period (a table, and a PNG chart drawn with matplotlib); the policy in force; the
    ledger's head, signing a new one, verifying it. Labels in English and Japanese
    (``?lang=ja`` or the ``hmn_node_lang`` cookie). No script, nothing from a CDN.

    Args:
        app: the admin app.
        admin: the node admin's actions.
        token: the node admin's token (the console's sign-in compares against it).
    """
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    sessions = SessionStore()
    app.state.console_sessions = sessions
    expected = token.encode("utf-8")
    router = APIRouter(prefix="/console", include_in_schema=False)

    def render(
        request: Request,
        name: str,
        status: int = 200,
        session: Session | None = None,
        **context: Any,
    ) -> HTMLResponse:
        lang = _lang(request)
        flash = list(session.flash) if session else []
        if session:
            session.flash.clear()
        response = templates.TemplateResponse(
            request,
            name,
            {
                "t": STRINGS[lang],
                "lang": lang,
                "path": request.url.path,
                "node": admin.node,
                "signed_in": session is not None,
                "csrf": session.csrf if session else "",
                "flash": flash,
                **context,
            },
            status_code=status,
        )
        if request.query_params.get("lang") == lang:
            response.set_cookie(
                LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", httponly=True
            )
        _secure_headers(response)
        return response

    def _secure_headers(response: Response) -> None:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"

    def session_of(request: Request) -> Session:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise _NeedLogin()
        return session

    async def checked_form(request: Request) -> tuple[Session, dict[str, str]]:
        session = session_of(request)
        form = await _form(request)
        if not secrets.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise _CsrfFailed()
        return session, form

    @app.exception_handler(_NeedLogin)
    async def _need_login(request: Request, _: _NeedLogin) -> Response:
        return RedirectResponse("/console/login", status_code=303)

    @app.exception_handler(_CsrfFailed)
    async def _csrf_failed(request: Request, _: _CsrfFailed) -> Response:
        t = STRINGS[_lang(request)]
        return render(request, "error.html", 403, message=t["session_check"])

    # -- sign-in -------------------------------------------------------------------------
    def login_page(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
        nonce = secrets.token_urlsafe(24)  # login CSRF: the form's value must match the cookie
        response = render(request, "login.html", status, error=error, login_nonce=nonce)
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            path="/console/login",
            secure=request.url.scheme == "https",
            max_age=3600,
        )
        return response

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return login_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        t = STRINGS[_lang(request)]
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not secrets.compare_digest(
            form.get("nonce", "").encode(), cookie.encode()
        ):
            return login_page(request, 403, t["login_expired"])
        if not secrets.compare_digest(form.get("token", "").strip().encode(), expected):
            return login_page(request, 401, t["bad_token"])
        response = RedirectResponse("/console/jobs", status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/console/login")
        response.set_cookie(
            SESSION_COOKIE,
            sessions.create(),
            httponly=True,
            samesite="strict",
            path="/console",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await checked_form(request)
        sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @router.get("/")
    def home(request: Request) -> Response:
        session_of(request)
        return RedirectResponse("/console/jobs", status_code=303)

    # -- jobs and held results ---------------------------------------------------------------
    def jobs_page(
        request: Request,
        session: Session,
        status: int = 200,
        errors: dict[str, dict[str, str]] | None = None,
        values: dict[str, dict[str, str]] | None = None,
    ) -> HTMLResponse:
        down: str | None = None
        jobs: list[Any] = []
        held: list[Any] = []
        try:
            jobs = admin.waiting()
            held = admin.held()
        except AdminError as exc:
            if exc.status not in (502, 503):
                raise
            down = exc.message
            status = exc.status
        return render(
            request,
            "jobs.html",
            status,
            session,
            node_status=admin.status(),
            jobs=jobs,
            held=held,
            down=down,
            errors=errors or {},
            values=values or {},
        )

    @router.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request) -> HTMLResponse:
        return jobs_page(request, session_of(request))

    async def act(request: Request, job_id: str, action: str, required_key: str | None) -> Response:
        session, form = await checked_form(request)
        t = STRINGS[_lang(request)]
        reason = form.get("reason", "").strip()
        if required_key and not reason:
            errors = {job_id: {"action": action, "reason": t[required_key]}}
            return jobs_page(request, session, 422, errors=errors)
        try:
            if action == "approve":
                admin.approve(job_id, reason or None)
            elif action == "reject":
                admin.reject(job_id, reason)
            else:
                admin.review(job_id, action, reason or None)
        except AdminError as exc:
            errors = {job_id: {"action": action, "reason": exc.message}}
            values = {job_id: {"action": action, "reason": reason}}
            return jobs_page(request, session, exc.status, errors=errors, values=values)
        done = {"approve": "approved", "reject": "rejected", "release": "released"}
        session.flash.append(("ok", f"{t[done.get(action, 'withheld')]} {job_id}"))
        return RedirectResponse("/console/jobs", status_code=303)

    @router.post("/jobs/{job_id}/approve")
    async def approve(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "approve", None)

    @router.post("/jobs/{job_id}/reject")
    async def reject(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "reject", "reason_needed")

    @router.post("/releases/{job_id}/release")
    async def release(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "release", None)

    @router.post("/releases/{job_id}/withhold")
    async def withhold(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "withhold", "withhold_reason_needed")

    # -- budget --------------------------------------------------------------------------
    @router.get("/budget", response_class=HTMLResponse)
    def budget(request: Request) -> HTMLResponse:
        session = session_of(request)
        t = STRINGS[_lang(request)]
        value = request.query_params.get("at", "")
        try:
            at = _parse_day(value)
        except ValueError:
            return render(
                request, "budget.html", 422, session, rows=[], at=value, error=t["bad_date"]
            )
        try:
            rows = admin.budget(at)
        except AdminError as exc:
            return render(
                request, "budget.html", exc.status, session, rows=[], at=value, error=exc.message
            )
        return render(request, "budget.html", 200, session, rows=rows, at=value, error=None)

    @router.get("/budget.png")
    def budget_png(request: Request) -> Response:
        session_of(request)
        try:
            rows = admin.budget(_parse_day(request.query_params.get("at")))
        except (ValueError, AdminError):
            return Response(status_code=422)
        response = Response(budget_chart_png(rows), media_type="image/png")
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- policy and ledger --------------------------------------------------------------------
    @router.get("/policy", response_class=HTMLResponse)
    def policy(request: Request) -> HTMLResponse:
        session = session_of(request)
        try:
            public = admin.policy()
        except AdminError as exc:
            return render(request, "error.html", exc.status, session, message=exc.message)
        return render(request, "policy.html", 200, session, p=public.policy, toml=public.toml)

    @router.get("/ledger", response_class=HTMLResponse)
    def ledger(request: Request) -> HTMLResponse:
        session = session_of(request)
        verification = None
        if request.query_params.get("verify"):
            try:
                verification = admin.verify()
            except AdminError as exc:
                return render(request, "error.html", exc.status, session, message=exc.message)
        return render(
            request,
            "ledger.html",
            200,
            session,
            head=admin.ledger_head(),
            verification=verification,
        )

    @router.post("/ledger/sign")
    async def sign(request: Request) -> Response:
        session, _ = await checked_form(request)
        t = STRINGS[_lang(request)]
        try:
            head = admin.sign_head()
        except AdminError as exc:
            return render(request, "error.html", exc.status, session, message=exc.message)
        session.flash.append(("ok", f"{t['signed']} ({t['tree_size']} {head.tree_size})"))
        return RedirectResponse("/console/ledger", status_code=303)

    @app.get("/console", include_in_schema=False)
    def console_root() -> Response:
        return RedirectResponse("/console/", status_code=307)

    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="node_static")
