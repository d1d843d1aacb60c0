"""How the coordinator's console shows values: numbers, JSON in a page, budgets, ledgers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from federation.audit_models import SUMMARY_PURPOSES, BudgetRow, NodeConsentPublic

__all__ = [
    "budget_rows",
    "consent_table",
    "numeric",
    "page_json",
    "payload_text",
    "query",
    "utc_input",
]


def numeric(metrics: Any) -> dict[str, float]:
    """Return the numeric entries of a metrics mapping as floats (nothing else, no booleans)."""
    if not isinstance(metrics, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def page_json(value: Any) -> str:
    """JSON safe to embed in a ``<script type="application/json">`` block."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def budget_rows(rows: list[BudgetRow]) -> list[BudgetRow]:
    """The periods in force first, then past ones, newest first; by domain within each."""
    current = sorted((r for r in rows if r.current), key=lambda r: r.domain)
    past = sorted((r for r in rows if not r.current), key=lambda r: (r.period, r.domain))
    return current + past[::-1]


def consent_table(item: NodeConsentPublic) -> dict[str, Any]:
    """One node's consent counts as a purpose × domain table for the template."""
    summary = item.summary
    if summary is None:
        return {"node": item.node, "summary": None}
    domains = sorted({c.domain or "" for c in summary.counts})
    cells = {(c.purpose, c.domain or ""): c for c in summary.counts}
    purposes = [p for p in SUMMARY_PURPOSES if any(k[0] == p for k in cells)]
    return {
        "node": item.node,
        "summary": summary,
        "domains": domains,
        "rows": [(p, [cells.get((p, d)) for d in domains]) for p in purposes],
    }


def utc_input(text: str) -> datetime | None:
    """Parse a ``datetime-local`` value (or an ISO time) as UTC; None when blank or malformed."""
    text = text.strip()[:32]
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _short(value: Any) -> Any:
    """Shorten 64-hex-digit hashes for display (the entry's bytes are what the proof checks)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value]
    return value


def payload_text(payload: dict[str, Any], limit: int = 200) -> str:
    """Return a ledger entry's payload as one line of JSON, hashes shortened, cut at ``limit``."""
    text = json.dumps(_short(payload), ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def query(filters: dict[str, str]) -> str:
    """Return the query string of the filters that are set."""
    return urlencode({k: v for k, v in filters.items() if v})
