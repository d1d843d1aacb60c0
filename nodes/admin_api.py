"""The node's own admin HTTP API and console, served on loopback beside the node service.

``create_admin_app(service)`` builds a FastAPI app (OpenAPI at ``/openapi.json``, docs at
``/docs``) for the node's staff: health (no auth), status, jobs waiting for this node with
what they would use, approve / reject with a reason, results held for release review,
release / withhold, budget, policy, ledger head (and signing a new one), ledger
verification. Every call but health needs the node admin's bearer token (the one the
service uses towards the coordinator), compared in constant time; a wrong or missing token
is a 401 with a JSON body. Errors are ``{"detail", "code", "field"}``: bad input is a 4xx
naming the field and changes nothing; a coordinator that cannot be reached is 503, one
that fails is 502. The console (:mod:`nodes.console`) is mounted under ``/console/``.

``serve_admin(app, host, port, stop)`` runs the app with uvicorn in a thread on a loopback
address until ``stop`` is set (no access log: nothing about a request is logged).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import uvicorn
from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime

from consent.signing import SignedTreeHead
from federation.api_models import ReleaseView
from nodes.admin_actions import AdminError, NodeAdmin
from nodes.admin_models import (
    ApproveBody,
    DecisionPublic,
    ErrorBody,
    Health,
    LedgerHead,
    LedgerVerification,
    PolicyPublic,
    RejectBody,
    ReleaseBody,
    Status,
    WaitingJob,
    WithholdBody,
)
from nodes.service import NodeService
from policies import BudgetStatus

__all__ = ["AdminServer", "create_admin_app", "link_token", "serve_admin"]

JobId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The job id at the coordinator.")
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No or wrong bearer token."},
    422: {"model": ErrorBody, "description": "Bad input; `field` names it."},
}
_COORD: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    502: {"model": ErrorBody, "description": "The coordinator failed or refused the node."},
    503: {"model": ErrorBody, "description": "The coordinator cannot be reached."},
}
_ACTION: dict[int | str, dict[str, Any]] = {
    **_COORD,
    404: {"model": ErrorBody, "description": "No such job waits for this node."},
    409: {"model": ErrorBody, "description": "The policy, budget or coordinator refuses it."},
}


def link_token(service: NodeService) -> str:
    """Return the node admin's token the service's coordinator link carries (its bearer).

    Raises:
        ValueError: the link carries no bearer token.
    """
    header = str(service.link.client.headers.get("Authorization", ""))
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ValueError("token: the node service's link carries no bearer token")
    return value.strip()


def _error(exc: AdminError) -> JSONResponse:
    body = ErrorBody(detail=exc.message, code=exc.code, field=exc.field).model_dump()
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:] or parts[:1]
    return ".".join(parts) or "body"


def create_admin_app(
    service: NodeService,
    supernode_status: Callable[[], dict[str, Any]] | None = None,
    *,
    token: str | None = None,
    console: bool = True,
) -> FastAPI:
    """Build the node's admin API (and its console under ``/console/``).

    Args:
        service: the running node service.
        supernode_status: returns the SuperNode's status for ``GET /status``
            (``SupernodeSupervisor.status``), if the node runs one.
        token: the node admin's token (default: the bearer of the service's coordinator link,
            i.e. ``read_token(config.token_file)``).
        console: also mount the web console.

    Returns:
        The FastAPI app.

    Raises:
        ValueError: no token.
    """
    admin_token = (token if token is not None else link_token(service)).strip()
    if not admin_token:
        raise ValueError("token: the node admin's token is empty")
    expected = admin_token.encode("utf-8")
    admin = NodeAdmin(service, supernode_status)
    app = FastAPI(
        title=f"Hamanasu node admin API ({service.config.name})",
        version="1",
        description="The node's own admin API, on loopback only. Bearer: the node admin's token.",
    )
    app.state.admin = admin
    bearer = HTTPBearer(auto_error=False, description="The node admin's API token.")

    @app.exception_handler(AdminError)
    async def _admin_error(request: Request, exc: AdminError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid input"}
        field = _field(first.get("loc", ()))
        body = ErrorBody(
            detail=f"{field}: {first.get('msg', 'invalid')}", code="invalid_input", field=field
        ).model_dump()
        body["errors"] = [
            {"field": _field(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in errors
        ]
        return JSONResponse(body, status_code=422)

    def require_admin(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        given = credentials.credentials.encode("utf-8") if credentials else b""
        if not secrets.compare_digest(given, expected):
            raise AdminError(
                401, "unauthorized", "a valid bearer token (the node admin's) is required"
            )

    auth = [Depends(require_admin)]

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """The service answers (no auth, no secret, no coordinator call)."""
        return Health(node=admin.node)

    @app.get(
        "/status", response_model=Status, dependencies=auth, responses=_ERRORS, tags=["service"]
    )
    def status() -> Status:
        """The node's last poll of the coordinator (time, error) and its SuperNode's status."""
        return admin.status()

    @app.get(
        "/jobs/waiting",
        response_model=list[WaitingJob],
        dependencies=auth,
        responses=_COORD,
        tags=["jobs"],
    )
    def waiting() -> list[WaitingJob]:
        """Jobs waiting for this node's decision, with what they would use here."""
        return admin.waiting()

    @app.get(
        "/jobs/{job_id}",
        response_model=WaitingJob,
        dependencies=auth,
        responses=_ACTION,
        tags=["jobs"],
    )
    def job(job_id: JobId) -> WaitingJob:
        """One waiting job: purpose, features, ε, subjects after consent, the policy's verdict."""
        return admin.job(job_id)

    @app.post(
        "/jobs/{job_id}/approve",
        response_model=DecisionPublic,
        dependencies=auth,
        responses=_ACTION,
        tags=["jobs"],
    )
    def approve(
        job_id: JobId, body: Annotated[ApproveBody | None, Body()] = None
    ) -> DecisionPublic:
        """Approve a job for this node: reserves its budget and posts the approval."""
        return admin.approve(job_id, body.reason if body else None)

    @app.post(
        "/jobs/{job_id}/reject",
        response_model=DecisionPublic,
        dependencies=auth,
        responses=_ACTION,
        tags=["jobs"],
    )
    def reject(job_id: JobId, body: RejectBody) -> DecisionPublic:
        """Reject a job for this node, with a reason (shown to the researcher)."""
        return admin.reject(job_id, body.reason)

    @app.get(
        "/releases/held",
        response_model=list[ReleaseView],
        dependencies=auth,
        responses=_COORD,
        tags=["releases"],
    )
    def held() -> list[ReleaseView]:
        """Results held for this node's release review (summaries, never the data)."""
        return admin.held()

    @app.post(
        "/releases/{job_id}/release",
        response_model=ReleaseView,
        dependencies=auth,
        responses=_ACTION,
        tags=["releases"],
    )
    def release(job_id: JobId, body: Annotated[ReleaseBody | None, Body()] = None) -> ReleaseView:
        """Release a held result; the node's ledger records the decision."""
        return admin.review(job_id, "release", body.reason if body else None)

    @app.post(
        "/releases/{job_id}/withhold",
        response_model=ReleaseView,
        dependencies=auth,
        responses=_ACTION,
        tags=["releases"],
    )
    def withhold(job_id: JobId, body: WithholdBody) -> ReleaseView:
        """Withhold a held result, with a reason; the node's ledger records the decision."""
        return admin.review(job_id, "withhold", body.reason)

    @app.get(
        "/budget",
        response_model=list[BudgetStatus],
        dependencies=auth,
        responses=_ERRORS,
        tags=["node"],
    )
    def budget(
        at: Annotated[
            AwareDatetime | None,
            Query(description="A time (with zone) in the period to show; default now."),
        ] = None,
    ) -> list[BudgetStatus]:
        """The privacy budget per domain for one period: allowed, spent, reserved, left."""
        return admin.budget(at)

    @app.get(
        "/policy", response_model=PolicyPublic, dependencies=auth, responses=_ERRORS, tags=["node"]
    )
    def policy() -> PolicyPublic:
        """The node policy in force (TOML and parsed)."""
        return admin.policy()

    @app.get(
        "/ledger/head",
        response_model=LedgerHead,
        dependencies=auth,
        responses=_ERRORS,
        tags=["ledger"],
    )
    def ledger_head() -> LedgerHead:
        """The ledger's size and its latest signed head (signs nothing)."""
        return admin.ledger_head()

    @app.post(
        "/ledger/head",
        response_model=SignedTreeHead,
        dependencies=auth,
        responses=_ERRORS,
        tags=["ledger"],
    )
    def sign_head() -> SignedTreeHead:
        """Sign the ledger's current head (for auditors) and return it."""
        return admin.sign_head()

    @app.get(
        "/ledger/verify",
        response_model=LedgerVerification,
        dependencies=auth,
        responses=_ERRORS,
        tags=["ledger"],
    )
    def verify() -> LedgerVerification:
        """Verify every entry, Merkle node and signed head of the ledger with the node's key."""
        return admin.verify()

    if console:
        from nodes.console import mount_console

        mount_console(app, admin, admin_token)
    return app


def _loopback(host: str) -> socket.AddressFamily:
    """Return the address family of a loopback ``host``.

    Raises:
        ValueError: ``host`` is not a loopback address.
    """
    if host == "localhost":
        return socket.AF_INET
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host: {host!r} is not an IP address or localhost") from None
    if not addr.is_loopback:
        raise ValueError(f"host: {host} is not a loopback address; the admin API stays local")
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


class AdminServer(threading.Thread):
    """A uvicorn server for the admin app in a daemon thread, stopped by an event.

    Attributes:
        server: the uvicorn server (``server.started`` turns true once it accepts).
        host: the address it listens on.
        port: the port it listens on (the bound one when 0 was asked).
    """

    def __init__(self, app: FastAPI, sock: socket.socket, host: str, stop: threading.Event) -> None:
        super().__init__(name="hamanasu-node-admin", daemon=True)
        self._sock, self._stop_event = sock, stop
        self.host, self.port = host, int(sock.getsockname()[1])
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )

    def run(self) -> None:
        """Serve until ``stop`` is set."""
        threading.Thread(target=self._watch, name="hamanasu-node-admin-stop", daemon=True).start()
        try:
            self.server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def _watch(self) -> None:
        self._stop_event.wait()
        self.server.should_exit = True


def serve_admin(app: FastAPI, host: str, port: int, stop: threading.Event) -> AdminServer:
    """Start serving ``app`` on ``host:port`` (loopback only) until ``stop`` is set.

    The socket is bound before returning, so a port in use fails here, not in the thread.

    Returns:
        The started :class:`AdminServer` thread (join it after setting ``stop``).

    Raises:
        ValueError: ``host`` is not a loopback address.
        OSError: the port cannot be bound.
    """
    family = _loopback(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1" if host == "localhost" else host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    thread = AdminServer(app, sock, host, stop)
    thread.start()
    return thread
