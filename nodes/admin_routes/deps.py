"""Dependencies of the node admin API's routes: the node admin's actions, the bearer check.

Every route but ``/health`` needs the node admin's bearer token (the one the node service
uses towards the coordinator), compared in constant time; a wrong or missing token is a
401 with a JSON body. The app that mounts the routes keeps the actions and the expected
token on its state (``create_admin_app``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from federation.web import same_secret
from nodes.admin_actions import AdminError, NodeAdmin
from nodes.admin_models import ErrorBody

__all__ = ["ACTION", "AUTH", "COORD", "ERRORS", "Admin", "JobId"]

JobId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The job id at the coordinator.")
]

#: Error answers of a route that needs the token.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No or wrong bearer token."},
    422: {"model": ErrorBody, "description": "Bad input; `field` names it."},
}
#: ... and calls the coordinator.
COORD: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    502: {"model": ErrorBody, "description": "The coordinator failed or refused the node."},
    503: {"model": ErrorBody, "description": "The coordinator cannot be reached."},
}
#: ... and acts on one job.
ACTION: dict[int | str, dict[str, Any]] = {
    **COORD,
    404: {"model": ErrorBody, "description": "No such job waits for this node."},
    409: {"model": ErrorBody, "description": "The policy, budget or coordinator refuses it."},
}

_bearer = HTTPBearer(auto_error=False, description="The node admin's API token.")


def _admin(request: Request) -> NodeAdmin:
    admin: NodeAdmin = request.app.state.admin
    return admin


def _require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    given = credentials.credentials if credentials else ""
    if not same_secret(given, request.app.state.admin_token):
        raise AdminError(401, "unauthorized", "a valid bearer token (the node admin's) is required")


#: The node admin's actions (policy, budget, ledger, the coordinator link).
Admin = Annotated[NodeAdmin, Depends(_admin)]
#: ``dependencies=`` of every route that needs the node admin's token.
AUTH = [Depends(_require_admin)]
