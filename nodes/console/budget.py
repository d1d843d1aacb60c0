"""The node's privacy budget: per domain and period (a table and a PNG chart), and per job."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from nodes.admin_actions import AdminError
from nodes.admin_models import JobReservation
from nodes.console.pages import SignedIn, console_state, render

if TYPE_CHECKING:
    from policies import BudgetStatus

__all__ = ["budget_chart_png", "router"]

router = APIRouter()


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


@router.get("/budget", response_class=HTMLResponse)
def budget(request: Request, session: SignedIn) -> HTMLResponse:
    """The budget table on a given day (``?at=YYYY-MM-DD``, default today)."""
    admin = console_state(request).admin
    t = console_state(request).shell.labels(request)
    value = request.query_params.get("at", "")
    try:
        at = _parse_day(value)
    except ValueError:
        return render(request, "budget.html", 422, session, rows=[], at=value, error=t["bad_date"])
    try:
        rows = admin.budget(at)
    except AdminError as exc:
        return render(
            request, "budget.html", exc.status, session, rows=[], at=value, error=exc.message
        )
    jobs = [JobReservation.of(r) for r in admin.service.point.budget().reservations()]
    return render(request, "budget.html", 200, session, rows=rows, at=value, error=None, jobs=jobs)


@router.get("/budget.png")
def budget_png(request: Request, _session: SignedIn) -> Response:
    """The budget chart (422 for a bad date)."""
    try:
        rows = console_state(request).admin.budget(_parse_day(request.query_params.get("at")))
    except (ValueError, AdminError):
        return Response(status_code=422)
    response = Response(budget_chart_png(rows), media_type="image/png")
    response.headers["Cache-Control"] = "no-store"
    return response
