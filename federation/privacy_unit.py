"""The privacy unit is the resident: a bound on the rows one resident contributes to a job.

A resident can hold several rows of a domain (a mother with twins or with two births, a
resident with yearly checkups), while DP-SGD, the statistics and the GLM mechanisms bound
what *one row* changes. Before a DP job reads a node's rows, :func:`cap_rows_per_subject`
keeps at most ``privacy.max_rows_per_subject`` rows of each subject pseudonym (the
``subject`` column): DP-SGD runs with a cap of 1, so its per-record guarantee is a
per-resident one; statistics and GLM multiply their sensitivity by the cap. Which rows are
kept depends on that resident's own rows only (their order in the node's data), so adding
or removing one resident changes only that resident's kept rows, as the neighbouring
relation requires.

Rows without a subject pseudonym (a researcher's sample file run by ``hamanasu simulate``)
count as one resident each.

A node applies the cap before its job's plan sees the rows (:func:`cap_for_job`) and says
how many rows it dropped (the ``rows_dropped`` metric of its reply); results list that count
per node (``rows_dropped_by_node``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from federation.spec import JobSpec

__all__ = [
    "CappedRows",
    "cap_for_job",
    "cap_rows_per_subject",
    "job_row_cap",
    "privacy_unit_summary",
]

#: The column holding a row's subject pseudonym.
SUBJECT_COLUMN = "subject"


@dataclass(frozen=True)
class CappedRows:
    """A node's rows after the per-resident cap.

    Attributes:
        frame: the rows kept.
        dropped: rows dropped because their resident already had ``cap`` rows.
        cap: the rows each resident may contribute.
        unit: ``resident`` (rows keyed by pseudonym) or ``row`` (no pseudonym column).
    """

    frame: pd.DataFrame
    dropped: int
    cap: int
    unit: str


def cap_rows_per_subject(frame: pd.DataFrame, cap: int) -> CappedRows:
    """Keep at most ``cap`` rows of each subject, the first ones in the data's order.

    Args:
        frame: the rows the node's gate admitted.
        cap: rows one resident may contribute (>= 1).

    Returns:
        The :class:`CappedRows` (rows kept in their original order, rows dropped).

    Raises:
        ValueError: ``cap`` is below 1.
    """
    if cap < 1:
        raise ValueError(f"max_rows_per_subject must be >= 1, got {cap}")
    if SUBJECT_COLUMN not in frame.columns:
        return CappedRows(frame, 0, cap, "row")
    keep = frame.groupby(SUBJECT_COLUMN, sort=False).cumcount().to_numpy() < cap
    kept = frame.loc[keep]
    return CappedRows(kept, int(len(frame) - len(kept)), cap, "resident")


def privacy_unit_summary(cap: int) -> dict[str, Any]:
    """Return what a DP result states about its privacy unit.

    Returns:
        ``{"privacy_unit": "resident", "max_rows_per_subject": cap}``: the ε is per
        resident (subject pseudonym), each contributing at most ``cap`` rows.
    """
    return {"privacy_unit": "resident", "max_rows_per_subject": int(cap)}


def job_row_cap(spec: JobSpec) -> int | None:
    """Return the rows one resident may contribute to ``spec`` at a node, None without DP.

    DP-SGD bounds one row per resident; statistics and GLM take ``max_rows_per_subject``.
    """
    if spec.privacy is None:
        return None
    return 1 if spec.kind == "train" else int(spec.privacy.max_rows_per_subject)


def cap_for_job(frame: pd.DataFrame, spec: JobSpec) -> tuple[pd.DataFrame, int | None]:
    """Apply the job's per-resident cap to a node's admitted rows.

    Returns:
        ``(rows kept, rows dropped)``; the count is None for a job without ``[privacy]``
        (which keeps every row).
    """
    cap = job_row_cap(spec)
    if cap is None:
        return frame, None
    capped = cap_rows_per_subject(frame, cap)
    return capped.frame, capped.dropped
