"""The coordinator's web console: server-rendered pages per role on its FastAPI app."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from coordinator.audit_store import AuditStore
from coordinator.console.i18n import STRINGS, pick_lang
from coordinator.errors import CATALOGUE, CoordinatorError, InvalidSpec, NotFound, Unauthorized
from coordinator.lifecycle import Lifecycle
from coordinator.routes.node_audit import audit_store
from coordinator.schemas import PrincipalPublic
from coordinator.store import Store
from federation.api_models import DecisionCreate, DecisionReason, ReleaseDecisionCreate
from federation.audit_models import SUMMARY_PURPOSES, BudgetRow, NodeConsentPublic
from federation.errors import JobSpecError
from federation.spec import read_spec_text
from federation.web_sessions import Session, SessionStore, same_secret

__all__ = ["SESSION_COOKIE", "mount_console"]

HERE = Path(__file__).parent
SESSION_COOKIE = "hmn_session"
LANG_COOKIE = "hmn_lang"
LOGIN_COOKIE = "hmn_login"

# The roles each view admits: the same sets as the API's dependencies (routes/deps.py).
RESEARCHER = ("researcher",)
VIEWER = ("researcher", "auditor", "operator")
NODE_ADMIN = ("node_admin",)
AUDITOR = ("auditor", "operator")


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
    session: Session
    lang: str

    @property
    def store(self) -> Store:
        store: Store = self.request.app.state.store
        return store

    @property
    def lifecycle(self) -> Lifecycle:
        lifecycle: Lifecycle = self.request.app.state.lifecycle
        return lifecycle

    @property
    def audit(self) -> AuditStore:
        return audit_store(self.request)


def _lang(request: Request) -> str:
    return pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


def _ctx(request: Request, roles: tuple[str, ...]) -> _Ctx:
    """The signed-in caller, checked like the API: a valid token and one of ``roles``."""
    sessions: SessionStore = request.app.state.console_sessions
    session = sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise _NeedLogin()
    try:
        caller = request.app.state.store.authenticate(session.token or "")
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
    if not same_secret(form.get("csrf", ""), ctx.session.csrf):
        raise _PageForbidden("the form's session check failed; reload the page")


def mount_console(app: FastAPI) -> None:
    """Add the console's routes, templates and static files to the coordinator app.

    It adds ``/console/...``: sign-in with an API token (kept server-side;
    the browser holds only a random session id in an HttpOnly, SameSite=Strict cookie), and
    one view per role, each checked with the API's role rules (:mod:`coordinator.routes.deps`):

    * researcher: submit a job from TOML (validated first, errors next to the field), own
      jobs, a job's rounds with a polling metrics chart, result downloads;
    * node admin: the jobs awaiting the node's decision (purpose, features, ε), approve or
      reject with a reason, the node's privacy budget per domain and period (spent, reserved,
      cap) as a chart and a table, as its service last published it;
    * auditor (and operator): every job with purpose, requester, approvals and ε per node; each
      node's latest verified signed ledger head with when it was last checked and the result; a
      ledger browser per node (kind and time filters) where an entry's inclusion proof is
      checked in the browser (WebCrypto SHA-256, RFC 9162; the head's Ed25519 signature too);
      the consent summary per node and purpose (small counts suppressed by the node).

    Charts use the vendored Chart.js (``static/chart.umd.js``, MIT); nothing loads from a CDN.
    Labels come in English and Japanese (``?lang=ja`` or the ``hmn_lang`` cookie).
    """
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.console_sessions = SessionStore()
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
        if not cookie or not same_secret(form.get("nonce", ""), cookie):
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
            raw = read_spec_text(text, "toml")
        except JobSpecError as exc:
            message = f"{t['malformed_toml']}: {exc.reason}"
            return researcher_page(ctx, 422, text, {"field": "spec", "message": message})
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
        if job.has_result and ctx.caller.role == "researcher":  # the result is the owner's
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
        ctx = _ctx(request, RESEARCHER)  # as routes/jobs.py: the submitting researcher only
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
        ctx = _ctx(request, RESEARCHER)
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
        budget = ctx.audit.budget(node)[0] if info is not None else None
        rows = _budget_rows(budget.rows if budget else [])
        t = STRINGS[ctx.lang]
        chart = {
            "labels": [f"{r.domain} · {r.period}" for r in rows],
            "datasets": [
                {"label": t["spent"], "data": [r.spent_epsilon for r in rows]},
                {"label": t["reserved"], "data": [r.reserved_epsilon for r in rows]},
                {"label": t["cap"], "data": [r.epsilon_cap for r in rows]},
            ],
            "y": "ε",
        }
        return page(
            ctx,
            "node.html",
            status,
            node=node,
            awaiting=awaiting,
            held=ctx.store.release_views(node, "held"),
            info=info,
            budget=budget,
            budget_rows=rows,
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
        return page(
            ctx,
            "audit.html",
            rows=rows,
            eps=eps,
            chart=_json(chart),
            ledgers=ctx.audit.statuses(),
            consents=[_consent_table(c) for c in ctx.audit.consent()],
        )

    @router.get("/audit/nodes/{name}", response_class=HTMLResponse)
    def ledger(request: Request, name: str) -> HTMLResponse:
        ctx = _ctx(request, AUDITOR)
        name = name[:64]
        q = request.query_params
        errors: dict[str, str] = {}
        times: dict[str, datetime | None] = {}
        for field in ("since", "until"):
            times[field] = _utc_input(q.get(field, ""))
            if times[field] is None and q.get(field, "").strip():
                errors[field] = STRINGS[ctx.lang]["bad_time"]
        kind = q.get("kind", "")[:64] or None
        newest = q.get("order", "desc") != "asc"
        try:
            offset = max(0, min(int(q.get("offset", "0")), 2**31 - 1))
        except ValueError:
            offset = 0
        limit = 25
        try:
            status = ctx.audit.status(name)
        except CoordinatorError as exc:
            raise _PageForbidden(exc.message, CATALOGUE.get(exc.code, 400)) from None
        entries = ctx.audit.entries(
            name, kind, times["since"], times["until"], limit, offset, newest_first=newest
        )
        filters = {
            "kind": kind or "",
            "since": q.get("since", "")[:32],
            "until": q.get("until", "")[:32],
            "order": "desc" if newest else "asc",
        }
        return page(
            ctx,
            "ledger.html",
            422 if errors else 200,
            node=status,
            page=entries,
            checks=ctx.audit.checks(name, 10),
            filters=filters,
            errors=errors,
            shown=[(e, _payload_text(e.payload)) for e in entries.entries],
            prev_offset=max(0, offset - limit) if offset > 0 else None,
            next_offset=offset + limit if offset + limit < entries.total else None,
            query=_query(filters),
            proof_labels=_json(
                {
                    k: STRINGS[ctx.lang][k]
                    for k in (
                        "proof_verified",
                        "proof_failed",
                        "checking",
                        "proof_detail",
                        "sig_valid",
                        "sig_invalid",
                        "sig_unsupported",
                        "no_crypto",
                        "proof_wrong_root",
                        "proof_wrong_entry",
                        "proof_malformed",
                    )
                }
            ),
        )

    @router.get("/api/audit/nodes/{name}/ledger/{index}/proof")
    def proof_json(request: Request, name: str, index: int) -> JSONResponse:
        ctx = _ctx(request, AUDITOR)
        try:
            proof = ctx.audit.inclusion(name[:64], index)
        except CoordinatorError as exc:
            raise _PageForbidden(exc.message, CATALOGUE.get(exc.code, 400)) from None
        return JSONResponse(proof.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

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


def _budget_rows(rows: list[BudgetRow]) -> list[BudgetRow]:
    """The periods in force first, then past ones, newest first; by domain within each."""
    current = sorted((r for r in rows if r.current), key=lambda r: r.domain)
    past = sorted((r for r in rows if not r.current), key=lambda r: (r.period, r.domain))
    return current + past[::-1]


def _consent_table(item: NodeConsentPublic) -> dict[str, Any]:
    """One node's consent counts as a purpose × domain table for the template."""
    summary = item.summary
    if summary is None:
        return {"node": item.node, "summary": None}
    domains = sorted({c.domain or "" for c in summary.counts})
    cells = {(c.purpose, c.domain or ""): c for c in summary.counts}
    purposes = [p for p in SUMMARY_PURPOSES if any(k[0] == p for k in cells)]
    return {
        "node": item.node,
        "summary": summary,
        "domains": domains,
        "rows": [(p, [cells.get((p, d)) for d in domains]) for p in purposes],
    }


def _utc_input(text: str) -> datetime | None:
    """Parse a ``datetime-local`` value (or an ISO time) as UTC; None when blank or malformed."""
    text = text.strip()[:32]
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _short(value: Any) -> Any:
    """Shorten 64-hex-digit hashes for display (the entry's bytes are what the proof checks)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value]
    return value


def _payload_text(payload: dict[str, Any], limit: int = 200) -> str:
    text = json.dumps(_short(payload), ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _query(filters: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in filters.items() if v})
