"""Dependencies of the routes, as ``Annotated`` aliases: the store, the caller, their role."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coordinator.auth import BadTokenThrottle
from coordinator.errors import Forbidden, TooManyRequests, Unauthorized
from coordinator.lifecycle import Lifecycle
from coordinator.schemas import PrincipalPublic, Role
from coordinator.store import Store

__all__ = [
    "Admin",
    "Auditor",
    "Caller",
    "LifecycleDep",
    "NodeCaller",
    "NodeService",
    "Operator",
    "Researcher",
    "StoreDep",
    "Viewer",
    "SERVICE_ONLY",
    "authenticate_throttled",
    "own_node",
    "require",
]

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer hmn_...`")


async def _store(request: Request) -> Store:
    return request.app.state.store


async def _lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


StoreDep = Annotated[Store, Depends(_store)]
LifecycleDep = Annotated[Lifecycle, Depends(_lifecycle)]


async def _caller(
    request: Request,
    store: StoreDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> PrincipalPublic:
    """Return the principal holding the request's bearer token.

    A token verified in the last ``token_cache_seconds`` is answered on the event loop
    (a dictionary look-up); otherwise the hash check and the database look-up run in the
    thread pool, so they never block other requests. A client that sent too many bad
    tokens lately waits (:class:`coordinator.auth.BadTokenThrottle`).

    Raises:
        Unauthorized: no bearer token, or an invalid or revoked one.
        TooManyRequests: this client sent too many bad tokens lately (429, Retry-After).
    """
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    cached = store.cached_principal(creds.credentials)
    if cached is not None:
        return cached
    return await authenticate_throttled(request, store, creds.credentials)


async def authenticate_throttled(request: Request, store: Store, token: str) -> PrincipalPublic:
    """Authenticate ``token`` (in the thread pool), counting a bad one against its client.

    Raises:
        Unauthorized: an invalid or revoked token.
        TooManyRequests: this client sent too many bad tokens lately.
    """
    throttle: BadTokenThrottle = request.app.state.token_throttle
    client = request.client.host if request.client is not None else "unknown"
    # The token is checked first (a keyed hash and one look-up: cheap): a valid token is
    # never refused, so residents of the guesser's address (a NAT, a proxy, the node
    # services of one host) keep working; only the bad ones are answered 429.
    wait = throttle.retry_after(client)
    try:
        return await run_in_threadpool(store.authenticate, token)
    except Unauthorized:
        throttle.failed(client)
        if wait > 0:
            raise TooManyRequests(
                f"too many bad tokens from this client; retry after {math.ceil(wait)} s", wait
            ) from None
        raise


Caller = Annotated[PrincipalPublic, Depends(_caller)]


def require(*roles: Role) -> Callable[[PrincipalPublic], Awaitable[PrincipalPublic]]:
    """Return a dependency that admits only principals holding one of ``roles``."""

    async def check(caller: Caller) -> PrincipalPublic:
        if caller.role not in roles:
            raise Forbidden(f"role {caller.role} may not do this; needs {' or '.join(roles)}")
        return caller

    return check


Operator = Annotated[PrincipalPublic, Depends(require(Role.OPERATOR))]
Researcher = Annotated[PrincipalPublic, Depends(require(Role.RESEARCHER))]
Auditor = Annotated[PrincipalPublic, Depends(require(Role.AUDITOR, Role.OPERATOR))]
Admin = Annotated[PrincipalPublic, Depends(require(Role.NODE_ADMIN))]
#: A node's service or one of its human admins (the route checks which node, and which).
NodeCaller = Annotated[PrincipalPublic, Depends(require(Role.NODE_SERVICE, Role.NODE_ADMIN))]

#: Why a route a node's service pushes to or polls refuses any other token.
SERVICE_ONLY = (
    "this route is for the node's service and needs the node's service credential "
    "(a node_service token the operator issues with `hamanasu coordinator "
    "node-service-token NODE`); a human's token (role {role}) is refused here"
)


async def _service(caller: Caller) -> PrincipalPublic:
    """Admit only a node's service token: its pushes and polls are never a human's.

    Raises:
        Forbidden: any other role, a node's human admins included (403 saying the route
            needs the node's service credential).
    """
    if caller.role != Role.NODE_SERVICE:
        raise Forbidden(SERVICE_ONLY.format(role=caller.role))
    return caller


#: A node's service, and nobody else (the route checks which node).
NodeService = Annotated[PrincipalPublic, Depends(_service)]
#: Who may read a job: its owner (checked in the route), auditors and the operator.
Viewer = Annotated[PrincipalPublic, Depends(require(Role.RESEARCHER, Role.AUDITOR, Role.OPERATOR))]


def own_node(caller: PrincipalPublic, name: str) -> None:
    """Refuse a node-bound caller acting for another node than its own.

    Raises:
        Forbidden: the caller's token is bound to another node (or none).
    """
    if caller.node != name:
        raise Forbidden(f"this token is bound to node {caller.node!r}, not {name!r}")
