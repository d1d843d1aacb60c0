"""Disclosure control of released tables: minimum cell counts and complementary suppression.

A table is a set of cells plus the margins released with it (row totals, column totals,
grand total). Every released value ``v`` obeys linear constraints (*lines*): a row of
cells sums to its row total, a column to its column total, the row totals (and the
column totals) to the grand total.

1. Primary suppression: a cell (or margin) whose count is below ``min_count`` (zeros
   excepted unless ``suppress_zeros``), or that the caller flags (e.g. too few events).
2. Complementary suppression: a line with exactly one suppressed entry would give it
   away by subtraction, so the smallest other entry of that line is suppressed too
   (cells before the line's total, smallest count first, then first in order). This is
   repeated until no line holds exactly one suppressed entry (a fixed point; each pass
   only adds suppressions, so it ends).

Limits: this is the usual pattern rule, not an optimal (linear-programming) protection:
it guarantees that no suppressed value can be recomputed exactly from one line, not that
the feasible interval of a suppressed value is wide. Noisy (DP) counts may be used as
input (post-processing).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Suppression", "suppress_cells", "table_lines"]


@dataclass(frozen=True)
class Suppression:
    """One suppressed entry: which, why (``primary`` / ``complementary``) and the rule."""

    key: Hashable
    reason: Literal["primary", "complementary"]
    detail: str


def table_lines(shape: Sequence[int]) -> tuple[list[tuple[int | None, ...]], list[list[tuple]]]:
    """Return the keys and lines of a table of 0, 1 or 2 dimensions with its margins.

    Keys are index tuples; ``None`` marks a margin (``(i, None)`` is row ``i``'s total,
    ``(None, None)`` the grand total; ``(None,)`` the total of a 1-D table; ``()`` is
    the only cell of a table without groups).
    """
    if len(shape) == 0:
        return [()], []
    if len(shape) == 1:
        keys: list[tuple[int | None, ...]] = [(i,) for i in range(shape[0])] + [(None,)]
        return keys, [keys]
    if len(shape) != 2:
        raise ValueError("tables have at most two dimensions")
    r, c = shape
    rows: list[int | None] = [*range(r), None]
    cols: list[int | None] = [*range(c), None]
    keys = [(i, j) for i in rows for j in cols]
    lines = [[(i, j) for j in cols] for i in rows] + [[(i, j) for i in rows] for j in cols]
    return keys, lines


def suppress_cells(
    counts: Mapping[Hashable, float],
    lines: Sequence[Sequence[Hashable]],
    min_count: int,
    *,
    flagged: Mapping[Hashable, str] | None = None,
    suppress_zeros: bool = False,
) -> list[Suppression]:
    """Return the suppressions of a table (primary first, then complementary rounds).

    Args:
        counts: released count of every key (cells and margins).
        lines: each line's keys; the last key of a line is its total.
        min_count: the smallest count that may be released.
        flagged: keys to suppress for another reason (the value says why).
        suppress_zeros: also suppress zero counts as primary.
    """
    out: dict[Hashable, Suppression] = {}
    for key, n in counts.items():
        if n < min_count and (n > 0 or suppress_zeros):
            out[key] = Suppression(key, "primary", f"count {n:.0f} < {min_count}")
        elif flagged and key in flagged:
            out[key] = Suppression(key, "primary", flagged[key])
    changed = True
    while changed:
        changed = False
        for line in lines:
            hidden = [k for k in line if k in out]
            if len(hidden) != 1:
                continue
            open_ = [
                (pos == len(line) - 1, counts[k], pos, k)
                for pos, k in enumerate(line)
                if k not in out
            ]
            if not open_:
                continue
            *_, pick = min(open_, key=lambda t: t[:3])
            out[pick] = Suppression(
                pick, "complementary", f"protects {hidden[0]!r} (line {line[-1]!r})"
            )
            changed = True
    return list(out.values())
