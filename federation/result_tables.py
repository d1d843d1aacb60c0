"""A released result as tables: pandas DataFrames and the summary a statistician reads.

Works on the result documents every job kind releases (``result.json``): a GLM's
``coefficients``, a statistics job's ``cells``, a training run's ``rounds`` with their
metrics and ε per node. The command line (``hamanasu simulate``, ``hamanasu job
results``) and the notebook client (``hamanasu.Client``) print the same summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = [
    "cells_frame",
    "coefficients_frame",
    "complete_case_frame",
    "epsilon_frame",
    "rounds_frame",
    "rows_dropped_frame",
    "summary_text",
]

_COEF_COLUMNS = {
    "estimate": "coef",
    "std_error": "std err",
    "z": "z",
    "p_value": "P>|z|",
    "ci_low": "[0.025",
    "ci_high": "0.975]",
    "odds_ratio": "OR",
}


def coefficients_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """Return a GLM's coefficients, one row per term (named as in the formula).

    Columns: ``estimate, std_error, z, p_value, ci_low, ci_high`` (and ``odds_ratio,
    or_ci_low, or_ci_high`` for a binomial fit); empty when the result has none.
    """
    coefs = result.get("coefficients") or {}
    frame = pd.DataFrame.from_dict(dict(coefs), orient="index")
    frame.index.name = "term"
    return frame


def cells_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """Return a statistics job's cells, one row per cell and variable.

    Columns: one per grouping variable, ``variable``, then each released measure
    (``count``, ``mean``, ``proportion``...), ``margin`` and ``suppressed``; a cell
    without variables gives one row with its count.
    """
    rows: list[dict[str, Any]] = []
    for cell in result.get("cells") or []:
        base = {**dict(cell.get("group") or {})}
        base["margin"] = bool(cell.get("margin", False))
        base["suppressed"] = bool(cell.get("suppressed", False))
        variables = cell.get("variables") or {}
        if not variables:
            rows.append({**base, "variable": None, "count": cell.get("count")})
        for name, stats in variables.items():
            flat = {k: v for k, v in dict(stats).items() if not isinstance(v, list | dict)}
            rows.append({**base, "variable": name, "count": cell.get("count"), **flat})
    return pd.DataFrame(rows)


def rounds_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """Return a training run's metrics per round that released them (``auc``, ``accuracy``...)."""
    rows = []
    rounds = result.get("rounds")  # a count in secure-sum reports, a list in training's
    for r in rounds if isinstance(rounds, list) else []:
        metrics = {k: v for k, v in dict(r.get("metrics") or {}).items() if _scalar(v)}
        if metrics:  # a round that released no evaluation has none
            rows.append({"round": r.get("round"), **metrics})
    return pd.DataFrame(rows).set_index("round") if rows else pd.DataFrame()


def epsilon_frame(
    result: Mapping[str, Any], by_node: Mapping[str, float] | None = None
) -> pd.Series:
    """Return ε spent per node: ``by_node`` if given, else the result's last round's."""
    eps = dict(by_node or {})
    if not eps:
        rounds = result.get("rounds")
        last = rounds[-1] if isinstance(rounds, list) and rounds else {}
        eps = dict(last.get("epsilon_by_node") or {})
        eps = eps or dict(result.get("epsilon_by_node") or {})
    return pd.Series(eps, name="epsilon", dtype=float).sort_index()


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return "" if value is None else str(value)


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    """Return ``frame`` as a plain text table (right-aligned, four significant digits)."""
    shown = frame.reset_index() if index else frame
    cols = [str(c) for c in shown.columns]
    cells = [[_fmt(v) for v in row] for row in shown.itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def summary_text(
    result: Mapping[str, Any], epsilon_by_node: Mapping[str, float] | None = None
) -> str:
    """Return the result's summary: the GLM table, the cells, or AUC per round; ε per node.

    A linked job's summary starts with its cohort's size and which holder gave which columns.

    The GLM table is laid out as ``statsmodels``' summary (coef, std err, z, P>|z|, the
    95 % interval, and the odds ratio for a binomial fit), under a header with the
    family, link, observations, deviance and log-likelihood.
    """
    kind = result.get("kind")
    parts: list[str] = []
    if result.get("status") not in (None, "succeeded"):
        parts.append(f"status: {result.get('status')}: {result.get('reason', '')}")
    if result.get("linked") and result.get("holders"):
        held = "; ".join(f"{h}: {', '.join(c)}" for h, c in result["holders"].items())
        parts.append(f"linked cohort of {result.get('linked_n')} residents ({held})")
    coefs = coefficients_frame(result)
    if not coefs.empty:
        head = [
            f"{result.get('family', '')} GLM ({result.get('link', '')} link)"
            + (f": {result['formula']}" if result.get("formula") else ""),
            f"observations {result.get('n_obs')}, df residual {result.get('df_resid')}, "
            f"deviance {_fmt(result.get('deviance'))}, log-likelihood {_fmt(result.get('llf'))}, "
            f"AIC {_fmt(result.get('aic'))}",
        ]
        cols = [c for c in _COEF_COLUMNS if c in coefs.columns]
        parts += head + [_table(coefs[cols].rename(columns=_COEF_COLUMNS))]
    cells = cells_frame(result)
    if not cells.empty:
        shown = cells[~cells["margin"]] if "margin" in cells else cells
        keep = [c for c in shown.columns if c not in ("margin",) and shown[c].notna().any()]
        parts.append(f"cells ({len(shown)} rows, suppressed ones blank)")
        parts.append(_table(shown[keep], index=False))
    rounds = rounds_frame(result)
    if not rounds.empty:
        keep = [c for c in ("auc", "accuracy", "log_loss") if c in rounds.columns]
        dp = dict(result.get("evaluation") or {}).get("dp") or {}
        parts.append(
            "evaluation per round"
            + (f" (DP noise: σ {_fmt(dp.get('noise_scale'))} per bin)" if dp else "")
        )
        parts.append(_table(rounds[keep] if keep else rounds))
    eps = epsilon_frame(result, epsilon_by_node)
    if not eps.empty:
        parts.append("ε spent per node")
        parts.append(_table(eps.to_frame()))
    elif kind in ("glm", "stats") and not (result.get("dp") or {}):
        parts.append("ε spent per node: none (no DP noise in this job)")
    complete = complete_case_frame(result)
    if not complete.empty:
        parts.append("complete cases per node: rows read, dropped as incomplete, missing")
        parts.append(_table(complete))
    dropped = rows_dropped_frame(result)
    if not dropped.empty:
        parts.append("rows dropped by the per-resident cap, per node")
        parts.append(_table(dropped.to_frame()))
    return "\n".join(parts)


def rows_dropped_frame(result: Mapping[str, Any]) -> pd.Series:
    """Return the rows each node's per-resident cap dropped (empty for a job without DP)."""
    dropped = dict(result.get("rows_dropped_by_node") or {})
    return pd.Series(dropped, name="rows dropped", dtype=int).sort_index()


def complete_case_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """Return each node's complete-case counts: rows read, rows dropped, missing per column.

    Empty for a job that kept every row. A small count reads ``< 10``.
    """
    by_node = dict(result.get("complete_case_by_node") or {})
    rows = {
        node: {
            "rows read": c.get("rows_read"),
            "dropped": c.get("rows_dropped"),
            **{f"missing {col}": n for col, n in (c.get("missing") or {}).items()},
        }
        for node, c in by_node.items()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index.name = "node"
    return frame
