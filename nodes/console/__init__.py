"""The node's small web console, on its admin app under ``/console/`` (loopback only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse, Response

from nodes.console import budget, jobs, ledger, sign_in
from nodes.console.pages import SESSION_COOKIE, add_error_handlers, make_console

if TYPE_CHECKING:
    from nodes.admin_actions import NodeAdmin

__all__ = ["SESSION_COOKIE", "mount_console"]


def mount_console(app: FastAPI, admin: NodeAdmin, token: str) -> None:
    """Add the console's routes, templates and static files to the node's admin app.

    Sign-in with the node admin's token (compared in constant time; the browser then holds
    only a random session id in an HttpOnly, SameSite=Strict cookie); every form carries a
    CSRF value bound to the session (:mod:`federation.web`). Pages, a router each: jobs
    waiting for this node with what they would use (purpose, features, ε, subjects after
    consent filtering, the policy's verdict) and approve / reject with a reason, results
    held for release review (:mod:`.jobs`); the budget per domain and period, a table and
    a PNG chart (:mod:`.budget`); the policy in force, the ledger's head, signing a new
    one, verifying it (:mod:`.ledger`). Labels in English and Japanese (``?lang=ja`` or the
    ``hmn_node_lang`` cookie). No script, nothing from a CDN.

    Args:
        app: the admin app.
        admin: the node admin's actions.
        token: the node admin's token (the console's sign-in compares against it).
    """
    console = make_console(admin, token)
    app.state.node_console = console
    add_error_handlers(app)
    router = APIRouter(prefix="/console", include_in_schema=False)
    for module in (sign_in, jobs, budget, ledger):
        router.include_router(module.router, include_in_schema=False)

    @app.get("/console", include_in_schema=False)
    def console_root() -> Response:
        return RedirectResponse("/console/", status_code=307)

    app.include_router(router)
    console.shell.mount_static(app, "node_static")
