"""The coordinator's web console: server-rendered pages per role on its FastAPI app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from coordinator.console import auditor, node_admin, researcher, sign_in
from coordinator.console.pages import HERE, SESSION_COOKIE, add_error_handlers, make_shell

__all__ = ["SESSION_COOKIE", "mount_console"]


def mount_console(app: FastAPI) -> None:
    """Add the console's routes, templates and static files to the coordinator app.

    It adds ``/console/...``: sign-in with an API token (kept server-side; the browser
    holds only a random session id in an HttpOnly, SameSite=Strict cookie,
    :mod:`federation.web`), and one router per role (:mod:`.researcher`,
    :mod:`.node_admin`, :mod:`.auditor`), each view checked with the API's role rules
    (:mod:`coordinator.console.pages`):

    * researcher: submit a job from TOML (validated first, errors next to the field), own
      jobs, a job's rounds with a polling metrics chart, result downloads;
    * node admin: the jobs awaiting the node's decision (purpose, features, ε), approve or
      reject with a reason, the node's privacy budget per domain and period (spent,
      reserved, cap) as a chart and a table, as its service last published it;
    * auditor (and operator): every job with purpose, requester, approvals and ε per node;
      each node's latest verified signed ledger head with when it was last checked and the
      result; a ledger browser per node (kind and time filters) where an entry's inclusion
      proof is checked in the browser; the consent summary per node and purpose (small
      counts suppressed by the node).

    Charts use the vendored Chart.js (``static/chart.umd.js``, MIT); nothing loads from a
    CDN. Labels come in English and Japanese (``?lang=ja`` or the ``hmn_lang`` cookie).
    """
    shell = make_shell()
    app.state.console_shell = shell
    add_error_handlers(app)
    console = APIRouter(prefix="/console", include_in_schema=False)
    for module in (sign_in, researcher, node_admin, auditor):
        console.include_router(module.router, include_in_schema=False)
    app.include_router(console)
    shell.mount_static(app, "console-static", HERE / "static")
