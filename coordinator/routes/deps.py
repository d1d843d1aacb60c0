"""Dependencies of the routes, as ``Annotated`` aliases: the store, the caller, their role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coordinator.errors import Forbidden, Unauthorized
from coordinator.lifecycle import Lifecycle
from coordinator.schemas import PrincipalPublic, Role
from coordinator.store import Store

__all__ = [
    "Admin",
    "Auditor",
    "Caller",
    "LifecycleDep",
    "Operator",
    "Researcher",
    "StoreDep",
    "Viewer",
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
    store: StoreDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> PrincipalPublic:
    """Return the principal holding the request's bearer token.

    A token verified in the last ``token_cache_seconds`` is answered on the event loop
    (a dictionary look-up); otherwise the argon2 verification and the database look-up
    run in the thread pool, so they never block other requests.

    Raises:
        Unauthorized: no bearer token, or an invalid or revoked one.
    """
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    cached = store.cached_principal(creds.credentials)
    if cached is not None:
        return cached
    return await run_in_threadpool(store.authenticate, creds.credentials)


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
#: Who may read a job: its owner (checked in the route), auditors and the operator.
Viewer = Annotated[PrincipalPublic, Depends(require(Role.RESEARCHER, Role.AUDITOR, Role.OPERATOR))]
