"""The web console (issue 7): server-rendered pages on the coordinator's own FastAPI app.

``mount_console(app)`` adds ``/console/...``: sign-in with an API token (kept server-side;
the browser holds only a random session id in an HttpOnly, SameSite=Strict cookie), and
one view per role, each checked with the API's role rules (:mod:`coordinator.routes.deps`):

* researcher: submit a job from TOML (validated first, errors next to the field), own
  jobs, a job's rounds with a polling metrics chart, result downloads;
* node admin: the jobs awaiting the node's decision (purpose, features, ε), approve or
  reject with a reason, the policy's ε caps per domain as a chart;
* auditor (and operator): every job with purpose, requester, approvals and ε per node.

Charts use the vendored Chart.js (``static/chart.umd.js``, MIT); nothing loads from a CDN.
Labels come in English and Japanese (``?lang=ja`` or the ``hmn_lang`` cookie).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from coordinator.console.i18n import STRINGS, pick_lang
from coordinator.errors import CATALOGUE, CoordinatorError, InvalidSpec, NotFound, Unauthorized
from coordinator.lifecycle import Lifecycle
from coordinator.schemas import PrincipalPublic
from coordinator.store import Store
from federation.api_models import DecisionCreate, DecisionReason, ReleaseDecisionCreate

__all__ = ["SESSION_COOKIE", "Sessions", "mount_console"]

HERE = Path(__file__).parent
SESSION_COOKIE = "hmn_session"
LANG_COOKIE = "hmn_lang"
LOGIN_COOKIE = "hmn_login"

# The roles each view admits: the same sets as the API's dependencies (routes/deps.py).
RESEARCHER = ("researcher",)
VIEWER = ("researcher", "auditor", "operator")
NODE_ADMIN = ("node_admin",)
AUDITOR = ("auditor", "operator")


@dataclass
class _Session:
    token: str
    csrf: str
    expires: float


class Sessions:
    """Server-side sessions: a random id (the cookie) → the token, a CSRF value, an expiry."""

    def __init__(self, ttl: float = 8 * 3600) -> None:
        self.ttl = ttl
        self._items: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str) -> str:
        """Open a session for a verified token; return its id (the cookie's value)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, v in self._items.items() if v.expires < now]:
                del self._items[key]
            self._items[sid] = _Session(token, secrets.token_urlsafe(24), now + self.ttl)
        return sid

    def get(self, sid: str | None) -> _Session | None:
        """Return the live session ``sid`` names, else None."""
        if not sid:
            return None
        with self._lock:
            item = self._items.get(sid)
            if item is None or item.expires < time.monotonic():
                self._items.pop(sid, None)
                return None
            return item

    def drop(self, sid: str | None) -> None:
        """End a session (sign-out, revoked token)."""
        with self._lock:
            self._items.pop(sid or "", None)


class _NeedLogin(Exception):
    pass


class _PageForbidden(Exception):
    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class _Ctx:
    request: Request
    caller: PrincipalPublic
    session: _Session
    lang: str

    @property
    def store(self) -> Store:
        store: Store = self.request.app.state.store
        return store

    @property
    def lifecycle(self) -> Lifecycle:
        lifecycle: Lifecycle = self.request.app.state.lifecycle
        return lifecycle


def _lang(request: Request) -> str:
    return pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


def _ctx(request: Request, roles: tuple[str, ...]) -> _Ctx:
    """The signed-in caller, checked like the API: a valid token and one of ``roles``."""
    sessions: Sessions = request.app.state.console_sessions
    session = sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise _NeedLogin()
    try:
        caller = request.app.state.store.authenticate(session.token)
    except Unauthorized:  # revoked or disabled since sign-in
        sessions.drop(request.cookies.get(SESSION_COOKIE))
        raise _NeedLogin() from None
    if caller.role not in roles:
        raise _PageForbidden(f"role {caller.role} may not do this; needs {' or '.join(roles)}")
    return _Ctx(request, caller, session, _lang(request))


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:1_000_000].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _check_csrf(ctx: _Ctx, form: dict[str, str]) -> None:
    if not secrets.compare_digest(form.get("csrf", ""), ctx.session.csrf):
        raise _PageForbidden("the form's session check failed; reload the page")


def mount_console(app: FastAPI) -> None:
    """Add the console's routes, templates and static files to the coordinator app."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.console_sessions = Sessions()
    router = APIRouter(prefix="/console", include_in_schema=False)

    def render(
        request: Request, name: str, lang: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        t = STRINGS[lang]
        response = templates.TemplateResponse(
            request,
            name,
            {"t": t, "lang": lang, "path": request.url.path, **context},
            status_code=status,
        )
        if request.query_params.get("lang") == lang:
            response.set_cookie(
                LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", httponly=True
            )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def page(ctx: _Ctx, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return render(
            ctx.request, name, ctx.lang, status, caller=ctx.caller, csrf=ctx.session.csrf, **context
        )

    @app.exception_handler(_NeedLogin)
    async def _need_login(request: Request, _: _NeedLogin) -> Response:
        if request.url.path.startswith("/console/api/"):
            return JSONResponse(
                {"detail": "sign in first", "code": "unauthorized", "field": None}, status_code=401
            )
        return RedirectResponse("/console/login", status_code=303)

    @app.exception_handler(_PageForbidden)
    async def _forbidden(request: Request, exc: _PageForbidden) -> Response:
        if request.url.path.startswith("/console/api/"):
            code = {403: "forbidden", 404: "not_found"}.get(exc.status, "refused")
            return JSONResponse(
                {"detail": exc.message, "code": code, "field": None}, status_code=exc.status
            )
        return render(
            request, "error.html", _lang(request), exc.status, message=exc.message, code=exc.status
        )

    # -- sign-in -------------------------------------------------------------------------
    def login_page(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
        # Login CSRF: the form carries a value that must match a cookie set with it.
        nonce = secrets.token_urlsafe(24)
        response = render(
            request, "login.html", _lang(request), status, error=error, login_nonce=nonce
        )
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

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await _form(request)
        token = form.get("token", "").strip()
        lang = _lang(request)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not secrets.compare_digest(form.get("nonce", ""), cookie):
            return login_page(request, 403, STRINGS[lang]["login_expired"])
        try:
            request.app.state.store.authenticate(token)
        except Unauthorized:
            return login_page(request, 401, STRINGS[lang]["bad_token"])
        sid = request.app.state.console_sessions.create(token)
        response = RedirectResponse("/console/", status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/console/login")
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            httponly=True,
            samesite="strict",
            path="/console",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        ctx = _ctx(request, ("researcher", "node_admin", "auditor", "operator"))
        _check_csrf(ctx, await _form(request))
        request.app.state.console_sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @router.get("/")
    def home(request: Request) -> Response:
        ctx = _ctx(request, ("researcher", "node_admin", "auditor", "operator"))
        target = {
            "researcher": "/console/jobs",
            "node_admin": "/console/node",
            "auditor": "/console/audit",
            "operator": "/console/audit",
        }[ctx.caller.role]
        return RedirectResponse(target, status_code=303)

    # -- researcher ----------------------------------------------------------------------
    def researcher_page(
        ctx: _Ctx, status: int = 200, spec_text: str = "", errors: dict[str, str] | None = None
    ) -> HTMLResponse:
        jobs = ctx.store.list_jobs(ctx.caller.id, None, 200, 0)
        return page(
            ctx, "researcher.html", status, jobs=jobs, spec_text=spec_text, errors=errors or {}
        )

    @router.get("/jobs", response_class=HTMLResponse)
    def researcher(request: Request) -> HTMLResponse:
        return researcher_page(_ctx(request, RESEARCHER))

    @router.post("/jobs", response_class=HTMLResponse)
    async def submit(request: Request) -> Response:
        ctx = _ctx(request, RESEARCHER)
        form = await _form(request)
        _check_csrf(ctx, form)
        text = form.get("spec", "")
        t = STRINGS[ctx.lang]
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return researcher_page(
                ctx, 422, text, {"field": "spec", "message": f"{t['malformed_toml']}: {exc}"}
            )
        try:
            job = ctx.lifecycle.submit(ctx.caller, raw)
        except InvalidSpec as exc:
            field = exc.field or "spec"
            message = exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
            return researcher_page(ctx, 422, text, {"field": field, "message": message})
        return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)

    def visible_job(ctx: _Ctx, job_id: str) -> Any:
        try:
            job, owner_id = ctx.store.get_job(job_id)
        except NotFound:
            raise _PageForbidden(f"no job {job_id!r}", 404) from None
        if ctx.caller.role == "researcher" and owner_id != ctx.caller.id:  # as routes/jobs.py
            raise _PageForbidden("this job belongs to another researcher")
        return job

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str) -> HTMLResponse:
        ctx = _ctx(request, VIEWER)
        job = visible_job(ctx, job_id[:64])
        return page(ctx, "job.html", job=job, events=ctx.store.events(job.id))

    @router.get("/api/jobs/{job_id}")
    def job_json(request: Request, job_id: str) -> JSONResponse:
        ctx = _ctx(request, VIEWER)
        job = visible_job(ctx, job_id[:64])
        history: list[dict[str, Any]] = []
        if job.has_result:
            try:
                rounds = ctx.store.result(job.id).report.get("rounds")
            except CoordinatorError:
                rounds = None
            if isinstance(rounds, list):
                for i, r in enumerate(rounds, 1):
                    if isinstance(r, dict):
                        m = r.get("metrics") if isinstance(r.get("metrics"), dict) else r
                        history.append({"round": r.get("round", i), "metrics": _numeric(m)})
        body = {
            "job": job.model_dump(mode="json"),
            "metrics": _numeric(job.metrics),
            "history": history,
            "events": [e.model_dump(mode="json") for e in ctx.store.events(job.id)],
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @router.get("/jobs/{job_id}/result.json")
    def result_json(request: Request, job_id: str) -> Response:
        ctx = _ctx(request, VIEWER)
        job = visible_job(ctx, job_id[:64])
        try:
            result = ctx.store.result(job.id)
        except CoordinatorError as exc:  # no result yet, or held by a node's release review
            raise _PageForbidden(exc.message, CATALOGUE.get(exc.code, 400)) from None
        return Response(
            result.model_dump_json(indent=2),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{job.id}-result.json"'},
        )

    @router.get("/jobs/{job_id}/plot.png")
    def result_plot(request: Request, job_id: str) -> Response:
        ctx = _ctx(request, VIEWER)
        job = visible_job(ctx, job_id[:64])
        try:
            png = ctx.store.plot(job.id)
        except CoordinatorError as exc:
            raise _PageForbidden(exc.message, CATALOGUE.get(exc.code, 400)) from None
        return Response(
            png,
            media_type="image/png",
            headers={"Content-Disposition": f'attachment; filename="{job.id}-plot.png"'},
        )

    # -- node admin ----------------------------------------------------------------------
    def node_page(
        ctx: _Ctx, status: int = 200, error: dict[str, str] | None = None, notice: str | None = None
    ) -> HTMLResponse:
        node = ctx.caller.node or ""
        views = ctx.store.node_jobs(node)
        awaiting = [v for v in views if v.approval.status in ("pending", "needs_approval")]
        info = next((n for n in ctx.store.list_nodes() if n.name == node), None)
        domains = sorted(info.domains) if info and info.domains else ["*"]
        cap = info.max_epsilon_per_job if info else None
        t = STRINGS[ctx.lang]
        chart = {
            "labels": domains,
            "caps": [cap for _ in domains],
            "cap_label": t["chart_cap"],
            "requested_label": t["chart_requested"],
            "requested": [
                sum(
                    float((v.spec.get("privacy") or {}).get("epsilon") or 0)
                    for v in awaiting
                    if v.spec.get("domain") == d or d == "*"
                )
                for d in domains
            ],
        }
        return page(
            ctx,
            "node.html",
            status,
            node=node,
            awaiting=awaiting,
            held=ctx.store.release_views(node, "held"),
            info=info,
            chart=_json(chart),
            error=error or {},
            notice=notice,
        )

    @router.get("/node", response_class=HTMLResponse)
    def node_admin(request: Request) -> HTMLResponse:
        return node_page(_ctx(request, NODE_ADMIN))

    @router.post("/node/jobs/{job_id}/decision", response_class=HTMLResponse)
    async def decide(request: Request, job_id: str) -> Response:
        ctx = _ctx(request, NODE_ADMIN)
        form = await _form(request)
        _check_csrf(ctx, form)
        outcome = form.get("outcome")
        reason = form.get("reason", "").strip()[:2000]
        t = STRINGS[ctx.lang]
        if outcome not in ("approve", "reject"):
            return node_page(ctx, 422, {"job": job_id, "message": "outcome: approve or reject"})
        if outcome == "reject" and not reason:
            return node_page(ctx, 422, {"job": job_id, "message": t["reason_needed"]})
        reasons = [DecisionReason(code=f"admin_{outcome}", message=reason)] if reason else []
        try:
            ctx.lifecycle.decide(
                job_id[:64],
                ctx.caller.node or "",
                DecisionCreate(
                    outcome="approve" if outcome == "approve" else "reject",
                    source="admin",
                    reasons=reasons,
                ),
                by=ctx.caller.name,
            )
        except CoordinatorError as exc:
            return node_page(
                ctx, 409 if exc.code == "conflict" else 422, {"job": job_id, "message": exc.message}
            )
        return RedirectResponse("/console/node", status_code=303)

    @router.post("/node/jobs/{job_id}/release", response_class=HTMLResponse)
    async def release(request: Request, job_id: str) -> Response:
        ctx = _ctx(request, NODE_ADMIN)
        form = await _form(request)
        _check_csrf(ctx, form)
        decision = form.get("decision")
        reason = form.get("reason", "").strip()[:2000] or None
        t = STRINGS[ctx.lang]
        if decision not in ("release", "withhold"):
            return node_page(ctx, 422, {"job": job_id, "message": "decision: release or withhold"})
        if decision == "withhold" and not reason:
            return node_page(ctx, 422, {"job": job_id, "message": t["withhold_reason"]})
        try:
            ctx.store.release_decide(
                job_id[:64],
                ctx.caller.node or "",
                ReleaseDecisionCreate(
                    decision="release" if decision == "release" else "withhold", reason=reason
                ),
                ctx.caller,
            )
        except CoordinatorError as exc:
            return node_page(
                ctx, CATALOGUE.get(exc.code, 400), {"job": job_id, "message": exc.message}
            )
        return RedirectResponse("/console/node", status_code=303)

    # -- auditor -------------------------------------------------------------------------
    @router.get("/audit", response_class=HTMLResponse)
    def audit(request: Request) -> HTMLResponse:
        ctx = _ctx(request, AUDITOR)
        store = ctx.store
        eps = store.epsilon_by_node()
        rows = []
        for job in store.list_jobs(None, None, 500, 0):
            try:
                spec, _ = store.job_spec(job.id)
                purpose = spec.purpose
            except CoordinatorError:
                purpose = None
            rows.append(
                {
                    "job": job,
                    "purpose": purpose,
                    "eps": {e.node: e.by_job[job.id] for e in eps if job.id in e.by_job},
                }
            )
        chart = {
            "labels": [e.node for e in eps],
            "values": [e.epsilon_total for e in eps],
            "label": STRINGS[ctx.lang]["eps_total"],
        }
        return page(ctx, "audit.html", rows=rows, eps=eps, chart=_json(chart))

    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="console-static")


def _numeric(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _json(value: Any) -> str:
    """JSON safe to embed in a ``<script type="application/json">`` block."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
