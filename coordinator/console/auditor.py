"""The auditor's pages (operators too): every job and its ε, ledger heads, the ledger browser.

A ledger entry's inclusion proof is served as JSON and checked in the browser (WebCrypto
SHA-256, RFC 9162; the head's Ed25519 signature too), so the auditor need not trust the
page for it.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse

from coordinator.console.formatting import consent_table, page_json, payload_text, query, utc_input
from coordinator.console.pages import Auditor, PageRefused, page
from coordinator.errors import CATALOGUE, CoordinatorError

__all__ = ["router"]

router = APIRouter()

#: Labels the ledger page's script shows while and after it checks a proof.
_PROOF_LABELS = (
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
_PAGE_SIZE = 25


@router.get("/audit", response_class=HTMLResponse)
def audit(ctx: Auditor) -> HTMLResponse:
    """Every job with purpose, requester, approvals and ε per node; ledgers; consent counts."""
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
        "label": ctx.t["eps_total"],
    }
    return page(
        ctx,
        "audit.html",
        rows=rows,
        eps=eps,
        chart=page_json(chart),
        ledgers=ctx.audit.statuses(),
        consents=[consent_table(c) for c in ctx.audit.consent()],
    )


@router.get("/audit/nodes/{name}", response_class=HTMLResponse)
def ledger(ctx: Auditor, name: str) -> HTMLResponse:
    """A node's ledger: its verified head, recent checks and its entries (filtered, paged)."""
    name = name[:64]
    q = ctx.request.query_params
    errors: dict[str, str] = {}
    times: dict[str, datetime | None] = {}
    for field in ("since", "until"):
        times[field] = utc_input(q.get(field, ""))
        if times[field] is None and q.get(field, "").strip():
            errors[field] = ctx.t["bad_time"]
    kind = q.get("kind", "")[:64] or None
    newest = q.get("order", "desc") != "asc"
    try:
        offset = max(0, min(int(q.get("offset", "0")), 2**31 - 1))
    except ValueError:
        offset = 0
    try:
        status = ctx.audit.status(name)
    except CoordinatorError as exc:
        raise PageRefused(exc.message, CATALOGUE.get(exc.code, 400)) from None
    entries = ctx.audit.entries(
        name, kind, times["since"], times["until"], _PAGE_SIZE, offset, newest_first=newest
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
        shown=[(e, payload_text(e.payload)) for e in entries.entries],
        prev_offset=max(0, offset - _PAGE_SIZE) if offset > 0 else None,
        next_offset=offset + _PAGE_SIZE if offset + _PAGE_SIZE < entries.total else None,
        query=query(filters),
        proof_labels=page_json({k: ctx.t[k] for k in _PROOF_LABELS}),
    )


@router.get("/api/audit/nodes/{name}/ledger/{index}/proof")
def proof_json(ctx: Auditor, name: str, index: int) -> JSONResponse:
    """An entry's inclusion proof against the node's latest verified head."""
    try:
        proof = ctx.audit.inclusion(name[:64], index)
    except CoordinatorError as exc:
        raise PageRefused(exc.message, CATALOGUE.get(exc.code, 400)) from None
    return JSONResponse(proof.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
