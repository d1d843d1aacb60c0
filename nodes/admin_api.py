"""The node's own admin HTTP API and console, served on loopback beside the node service.

``create_admin_app(service)`` builds a FastAPI app (OpenAPI at ``/openapi.json``, docs at
``/docs``) for the node's staff: health (no auth), status, jobs waiting for this node with
what they would use, approve / reject with a reason, results held for release review,
release / withhold, budget, policy, ledger head (and signing a new one), ledger
verification. Every call but health needs the node admin's bearer token (the one the
service uses towards the coordinator), compared in constant time; a wrong or missing token
is a 401 with a JSON body. Errors are ``{"detail", "code", "field"}``: bad input is a 4xx
naming the field and changes nothing; a coordinator that cannot be reached is 503, one
that fails is 502. The routes are :mod:`nodes.admin_routes`; the console
(:mod:`nodes.console`) is mounted under ``/console/``.

``serve_admin(app, host, port, stop)`` runs the app with uvicorn in a thread on a loopback
address until ``stop`` is set (no access log: nothing about a request is logged).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from federation.http_limits import RequestLimits
from nodes.admin_actions import AdminError, NodeAdmin
from nodes.admin_models import ErrorBody
from nodes.admin_routes import admin_router
from nodes.service import NodeService

__all__ = ["AdminServer", "create_admin_app", "link_token", "serve_admin"]


def link_token(service: NodeService) -> str:
    """Return the node admin's token: the bearer of the link the admin's actions go through.

    Raises:
        ValueError: the link carries no bearer token.
    """
    header = str(service.admin_link.client.headers.get("Authorization", ""))
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
        token: the node admin's token (default: the bearer of the link the admin's actions
            go through: ``admin_token_file``'s token, else ``token_file``'s).
        console: also mount the web console.

    Returns:
        The FastAPI app.

    Raises:
        ValueError: no token.
    """
    admin_token = (token if token is not None else link_token(service)).strip()
    if not admin_token:
        raise ValueError("token: the node admin's token is empty")
    admin = NodeAdmin(service, supernode_status)
    app = FastAPI(
        title=f"Hamanasu node admin API ({service.config.name})",
        version="1",
        description="The node's own admin API, on loopback only. Bearer: the node admin's token.",
    )
    app.add_middleware(RequestLimits)  # 1 MiB bodies, JSON nested at most 64 deep
    app.state.admin = admin  # the routes' actions and the token they check (admin_routes)
    app.state.admin_token = admin_token

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

    app.include_router(admin_router)

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
