"""Linked statistics inside MPyC: cell counts, sums and sums of squares across holders.

Each grouping variable's holder shares the one-hot cell indicators of its rows (rows in
cohort order); each value variable's holder shares, per variable, the present indicator,
the value (0 where missing) and its square. Cells crossing grouping variables of two
holders are secure products of the one-hots. The opened vector is exactly the horizontal
statistics vector (:func:`federation.analytics.stats.stats_layout`, without histograms)
of the pooled inner join, so :func:`federation.analytics.stats.stats_finalize` releases
it with the same measures and disclosure control. Only that vector is opened.

With DP (``job.dp``, :mod:`federation.linkage.mpc_noise`) every value is clipped to its
public bounds by its holder, the unmatched count is computed inside the computation too,
and the parties' secret noise shares (per entry: 1 for counts, ``B`` for sums, ``B²`` for
sums of squares, ``B = max(|low|, |high|)``) are added before the one opening.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from federation.linkage.jobs import LinkedStatsJob
from federation.linkage.mpc_noise import LinkedDp, secure_noise

__all__ = ["StatsColumns", "linked_stats_vector"]


class StatsColumns:
    """One party's private inputs, rows in cohort order.

    ``codes``: per grouping variable it holds (job order), the level index or -1 when the
    value is missing or undeclared; ``values``: per value variable it holds, floats with
    NaN for missing.
    """

    def __init__(self, codes: np.ndarray | None = None, values: np.ndarray | None = None):
        self.codes = None if codes is None else np.asarray(codes, dtype=np.int64)
        self.values = None if values is None else np.asarray(values, dtype=np.float64)


def _block_scales(job: LinkedStatsJob, dp: LinkedDp, n_cells: int) -> np.ndarray:
    """Return each opened entry's per-row bound (the horizontal statistics' block scales)."""
    out = [np.ones(n_cells)]
    for lo, hi in dp.bounds:
        b = max(abs(lo), abs(hi))
        out += [np.ones(n_cells), np.full(n_cells, b), np.full(n_cells, b * b)]
    return np.concatenate([*out, [1.0]])


def linked_stats_vector(mpc: Any, job: LinkedStatsJob, local: StatsColumns,
                        before_open: Callable[[int], None] | None = None) -> np.ndarray:
    """Return the opened statistics vector (every party gets the same).

    Layout: ``rows`` per cell, then per variable ``n``, ``sum``, ``sumsq`` per cell, then
    ``unmatched``. ``before_open(1)`` runs before the opening (a holder's charge).

    Raises:
        ValueError: this party's inputs do not have the job's shape.

    """
    f = mpc.SecFxp(64 + job.frac_bits, job.frac_bits)
    n = job.n
    dp = LinkedDp.from_json(job.dp)
    if dp is not None and len(dp.bounds) != len(job.variables):
        raise ValueError("DP statistics need public bounds for every variable")

    def share(sender: int, values: np.ndarray | None, shape: tuple[int, ...]) -> Any:
        arr = values if (values is not None and mpc.pid == sender) else np.zeros(shape)
        if arr.shape != shape:
            raise ValueError(f"party {sender}: expected shape {shape}, got {arr.shape}")
        return mpc.input(f.array(arr, integral=False), senders=sender)

    onehot = None
    for gi, (_name, party, levels) in enumerate(job.group):
        mine = None
        if mpc.pid == party and local.codes is not None:
            col = [i for i, g in enumerate(job.group) if g[1] == party].index(gi)
            codes = local.codes[:, col]
            mine = np.zeros((n, levels))
            ok = codes >= 0
            mine[np.flatnonzero(ok), codes[ok]] = 1.0
        g = share(party, mine, (n, levels))
        onehot = g if onehot is None else (onehot[:, :, None] * g[:, None, :]).reshape(n, -1)
    n_cells = int(np.prod([g[2] for g in job.group])) if job.group else 1
    if onehot is None:
        onehot = f.array(np.ones((n, 1)), integral=False)
    parts = [mpc.np_sum(onehot, axis=0)]
    for vi, (_name, party) in enumerate(job.variables):
        mine = None
        if mpc.pid == party and local.values is not None:
            col = [i for i, v in enumerate(job.variables) if v[1] == party].index(vi)
            x = local.values[:, col]
            if dp is not None:  # the sensitivity holds for values within the public bounds
                x = np.clip(x, *dp.bounds[vi])
            present = ~np.isnan(x)
            x0 = np.where(present, x, 0.0)
            mine = np.stack([present.astype(float), x0, x0 * x0], axis=1)
        cols = share(party, mine, (n, 3))
        parts.append((onehot.T @ cols).T.reshape(3 * n_cells))
    if dp is not None:
        parts.append(mpc.np_fromlist([f(float(n)) - mpc.np_sum(parts[0])]))  # unmatched
        vec = mpc.np_concatenate(parts)
        vec = vec + secure_noise(mpc, f, _block_scales(job, dp, n_cells), dp)
    else:
        vec = mpc.np_concatenate(parts)
    if before_open is not None:
        before_open(1)
    opened = np.asarray(mpc.run(mpc.output(vec)), dtype=np.float64)
    if dp is not None:
        return opened
    opened[:n_cells] = np.rint(opened[:n_cells])  # counts are integers
    for vi in range(len(job.variables)):
        at = n_cells * (1 + 3 * vi)
        opened[at : at + n_cells] = np.rint(opened[at : at + n_cells])
    return np.concatenate([opened, [float(n) - float(opened[:n_cells].sum())]])
