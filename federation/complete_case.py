"""Complete cases: a node keeps the rows holding every value a job needs, and says so.

It says how many rows it read and dropped, and per column how many missed a value. A
job asks for it with ``complete_case = true`` in its spec; a node whose mapping file
says ``complete_case = true`` does it for every job. The node drops the incomplete rows
when it reads (before consent filtering) and sends the counts with its reply as metrics
named ``complete_case.*`` (never inside a secure sum: they are counts, not data). A count
from 1 to ``SMALL_COUNT - 1`` goes out as ``-1``, shown as "< 10", so a single
resident's missing value is not singled out. The coordinator gathers them into the
result as ``complete_case_by_node``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["SMALL_COUNT", "CompleteCaseCounts", "complete_cases", "counts_from_metrics"]

#: Counts below this (and above 0) are sent as -1 ("fewer than SMALL_COUNT").
SMALL_COUNT = 10
_PREFIX = "complete_case."


@dataclass(frozen=True)
class CompleteCaseCounts:
    """What a complete-case read did at one node.

    Attributes:
        rows_read: rows the node read for the job.
        rows_dropped: rows left out because a value the job needs was missing.
        missing: per column the job needs, the rows missing it (a row may miss several).
    """

    rows_read: int
    rows_dropped: int
    missing: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, int]:
        """Return the counts as reply metrics, small counts as -1."""
        out = {
            f"{_PREFIX}rows_read": _shown(self.rows_read),
            f"{_PREFIX}rows_dropped": _shown(self.rows_dropped),
        }
        out.update({f"{_PREFIX}missing.{c}": _shown(n) for c, n in self.missing.items()})
        return out


def _shown(count: int) -> int:
    return -1 if 0 < count < SMALL_COUNT else int(count)


def complete_cases(
    frame: pd.DataFrame, columns: Sequence[str]
) -> tuple[pd.DataFrame, CompleteCaseCounts]:
    """Return the rows of ``frame`` holding every one of ``columns``, and the counts.

    Columns absent from ``frame`` are ignored (the read already refused a missing one).
    """
    present = [c for c in dict.fromkeys(columns) if c in frame.columns]
    missing = frame[present].isna()
    keep = ~missing.any(axis=1)
    counts = CompleteCaseCounts(
        rows_read=len(frame),
        rows_dropped=int((~keep).sum()),
        missing={c: int(missing[c].sum()) for c in present},
    )
    return frame[keep.to_numpy()].reset_index(drop=True), counts


def counts_from_metrics(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return a node's complete-case counts from its reply metrics (None when it sent none).

    Returns:
        ``{"rows_read", "rows_dropped", "missing": {column: count}}``; a small count is
        the text ``"< 10"``.
    """
    found = {k[len(_PREFIX) :]: v for k, v in metrics.items() if str(k).startswith(_PREFIX)}
    if not found:
        return None

    def shown(value: Any) -> int | str:
        return f"< {SMALL_COUNT}" if int(value) < 0 else int(value)

    return {
        "rows_read": shown(found.get("rows_read", 0)),
        "rows_dropped": shown(found.get("rows_dropped", 0)),
        "missing": {
            k.split(".", 1)[1]: shown(v)
            for k, v in sorted(found.items())
            if k.startswith("missing.")
        },
    }
