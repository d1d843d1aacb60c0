"""The node admin's page: jobs awaiting the node's decision, held results, the node's budget."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from coordinator.console.formatting import budget_rows, page_json
from coordinator.console.pages import ConsoleCtx, NodeAdmin, check_csrf, page
from coordinator.errors import CATALOGUE, CoordinatorError
from federation.api_models import DecisionCreate, DecisionReason, ReleaseDecisionCreate
from federation.errors import MAX_REASON, bounded_reason
from federation.linkage.reveals import REVEALS

__all__ = ["router"]

router = APIRouter()


def _node_page(
    ctx: ConsoleCtx,
    status: int = 200,
    error: dict[str, str] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    node = ctx.caller.node or ""
    views = ctx.store.node_jobs(node)
    awaiting = [v for v in views if v.approval.status in ("pending", "needs_approval")]
    info = next((n for n in ctx.store.list_nodes() if n.name == node), None)
    budget = ctx.audit.budget(node)[0] if info is not None else None
    rows = budget_rows(budget.rows if budget else [])
    t = ctx.t
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
        chart=page_json(chart),
        error=error or {},
        notice=notice,
        reveals=REVEALS,
    )


@router.get("/node", response_class=HTMLResponse)
def node_admin(ctx: NodeAdmin) -> HTMLResponse:
    """The node admin's page."""
    return _node_page(ctx)


@router.post("/node/jobs/{job_id}/decision", response_class=HTMLResponse)
async def decide(ctx: NodeAdmin, job_id: str) -> Response:
    """Approve or reject a job for the admin's node (a rejection needs a reason)."""
    form = await check_csrf(ctx)
    outcome = form.get("outcome")
    reason = bounded_reason(form.get("reason", ""), MAX_REASON)
    if outcome not in ("approve", "reject"):
        return _node_page(ctx, 422, {"job": job_id, "message": "outcome: approve or reject"})
    if outcome == "reject" and not reason:
        return _node_page(ctx, 422, {"job": job_id, "message": ctx.t["reason_needed"]})
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
        return _node_page(
            ctx, 409 if exc.code == "conflict" else 422, {"job": job_id, "message": exc.message}
        )
    return RedirectResponse("/console/node", status_code=303)


@router.post("/node/jobs/{job_id}/release", response_class=HTMLResponse)
async def release(ctx: NodeAdmin, job_id: str) -> Response:
    """Release or withhold a result held for the node's review (withholding needs a reason)."""
    form = await check_csrf(ctx)
    decision = form.get("decision")
    reason = bounded_reason(form.get("reason", ""), 2000) or None  # the wire model's bound
    if decision not in ("release", "withhold"):
        return _node_page(ctx, 422, {"job": job_id, "message": "decision: release or withhold"})
    if decision == "withhold" and not reason:
        return _node_page(ctx, 422, {"job": job_id, "message": ctx.t["withhold_reason"]})
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
        return _node_page(
            ctx, CATALOGUE.get(exc.code, 400), {"job": job_id, "message": exc.message}
        )
    return RedirectResponse("/console/node", status_code=303)
