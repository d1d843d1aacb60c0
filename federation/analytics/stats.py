"""Federated descriptive statistics (``kind = "stats"``): node sums, server release.

Node side, :func:`stats_local` turns the node's rows into one flat float64 vector of
sums over group cells (layout :class:`StatsLayout`, derived from the spec alone, so
every node and the server agree without seeing each other's data):

* ``rows``: rows per cell;
* per variable ``v``: ``v:n`` (non-missing values), ``v:sum``, ``v:sumsq`` and, when
  the variable has public bins, ``v:hist`` (``E + 1`` slots per cell for ``E`` edges:
  below the first edge, the ``E - 1`` bins ``[e_i, e_i+1)`` with the last one closed,
  above the last edge);
* ``unmatched``: rows whose group value is missing or not among the declared levels.

Cells are the product of the declared levels of up to two ``group_by`` variables
(row-major, first variable slowest). Levels are public (``spec.stats.levels``), never
learnt from the data. Server side, :func:`stats_finalize` takes the securely summed
vector and releases count, sum, mean (t interval), variance, proportion (Wilson
interval) and histogram quantiles per cell and per margin, with disclosure control
(:mod:`federation.analytics.disclosure`) and optional DP (:mod:`.dp_noise`).

DP sensitivity: values are clipped to ``spec.stats.bounds`` on the node (required in DP
mode). Adding or removing one subject (at most ``max_rows_per_subject`` rows) changes
each *block* (``rows``, ``v:n``, ``v:sum``, ``v:sumsq``, ``v:hist``, ``unmatched``) by at
most ``m * s_block`` in L2 and L1 norm, with ``s = 1`` for counts, ``B_v = max(|lo|,
|hi|)`` for sums and ``B_v²`` for sums of squares. Noise is added per block with scale
``σ · s_block``, i.e. to the block-normalised vector, whose L2 sensitivity is
``m · sqrt(J)`` for ``J`` blocks (L1: ``m · J`` for Laplace); σ is calibrated by OpenDP
for the job's (ε, δ). Intervals add the noise variance (normal approximation); DP
proportions use a normal rather than a Wilson interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from federation.analytics import dp_noise
from federation.analytics.disclosure import suppress_cells, table_lines
from federation.analytics.dp_noise import DpConfig
from federation.errors import FederationError
from federation.privacy_unit import privacy_unit_summary

__all__ = [
    "StatsError",
    "StatsLayout",
    "StatsResult",
    "stats_finalize",
    "stats_layout",
    "stats_local",
    "stats_noise_scale",
]

#: Label of a margin (all levels of a grouping variable).
ALL = "(all)"
_Z975 = float(sps.norm.ppf(0.975))


class StatsError(FederationError, ValueError):
    """A statistics job cannot be computed as asked (undeclared levels, missing bounds...)."""


@dataclass(frozen=True)
class StatsLayout:
    """Where every block sits in the flat vector (derived from the spec only)."""

    variables: tuple[str, ...]
    group_by: tuple[str, ...]
    levels: tuple[tuple[int | str, ...], ...]
    edges: Mapping[str, tuple[float, ...]]
    bounds: Mapping[str, tuple[float, float]]
    blocks: tuple[tuple[str, int, int], ...] = field(default=())  # (name, offset, width)

    @property
    def shape(self) -> tuple[int, ...]:
        """Return the cell table's shape (one entry per grouping variable)."""
        return tuple(len(lv) for lv in self.levels)

    @property
    def n_cells(self) -> int:
        """Return the number of group cells."""
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def size(self) -> int:
        """Return the vector's length."""
        name, off, width = self.blocks[-1]
        return off + width

    def block(self, vector: np.ndarray, name: str) -> np.ndarray:
        """Return block ``name`` of ``vector``, reshaped to ``(*shape, width_per_cell)``."""
        for bname, off, width in self.blocks:
            if bname == name:
                part = np.asarray(vector)[off : off + width]
                if name == "unmatched":
                    return part
                return part.reshape((*self.shape, width // self.n_cells))
        raise KeyError(name)

    def sensitivity(self, name: str) -> float:
        """Return the per-row bound of block ``name`` (1 for counts, B or B² for sums)."""
        if name.endswith(":sum") or name.endswith(":sumsq"):
            var = name.rsplit(":", 1)[0]
            lo, hi = self.bounds[var]
            b = max(abs(lo), abs(hi))
            return b if name.endswith(":sum") else b * b
        return 1.0

    def block_scales(self) -> np.ndarray:
        """Return, per vector entry, the per-row bound of its block (1 for unbounded sums)."""
        out = np.ones(self.size)
        for name, off, width in self.blocks:
            if name.rsplit(":", 1)[0] in self.bounds or not name.endswith(("sum", "sumsq")):
                out[off : off + width] = self.sensitivity(name)
        return out


def _stats_spec(spec: Any) -> Any:
    return spec.stats if hasattr(spec, "stats") else spec


def stats_layout(spec: Any) -> StatsLayout:
    """Return the layout a ``JobSpec`` (or its ``StatsSpec``) implies.

    Raises:
        StatsError: a grouping variable has no declared levels, no variables to count
            rows of, or bins that are not increasing.
    """
    st = _stats_spec(spec)
    levels = []
    for g in st.group_by:
        lv = tuple(st.levels.get(g, ()))
        if not lv:
            raise StatsError(
                f"stats.levels: grouping variable {g!r} needs declared (public) levels"
            )
        levels.append(lv)
    want_hist = bool({"histogram", "quantile"} & set(st.measures))
    edges: dict[str, tuple[float, ...]] = {}
    if want_hist:
        for v in st.variables:
            if st.bins:
                e = tuple(float(x) for x in st.bins)
            elif v in st.bounds:
                lo, hi = st.bounds[v]
                e = tuple(np.linspace(lo, hi, st.histogram_bins + 1).tolist())
            else:
                continue
            if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:], strict=False)):
                raise StatsError("stats.bins: need at least two strictly increasing edges")
            edges[v] = e
    bounds = {v: (float(a), float(b)) for v, (a, b) in st.bounds.items()}
    layout = StatsLayout(tuple(st.variables), tuple(st.group_by), tuple(levels), edges, bounds)
    n = layout.n_cells
    blocks: list[tuple[str, int, int]] = []
    off = 0

    def add(name: str, width: int) -> None:
        nonlocal off
        blocks.append((name, off, width))
        off += width

    add("rows", n)
    for v in st.variables:
        add(f"{v}:n", n)
        add(f"{v}:sum", n)
        add(f"{v}:sumsq", n)
        if v in edges:
            add(f"{v}:hist", n * (len(edges[v]) + 1))
    add("unmatched", 1)
    return StatsLayout(
        layout.variables, layout.group_by, layout.levels, edges, bounds, tuple(blocks)
    )


def _cell_index(df: pd.DataFrame, layout: StatsLayout) -> np.ndarray:
    """Return each row's flat cell index, -1 where a group value is not a declared level."""
    idx = np.zeros(len(df), dtype=np.int64)
    ok = np.ones(len(df), dtype=bool)
    for g, lv in zip(layout.group_by, layout.levels, strict=True):
        if g not in df.columns:
            raise StatsError(f"grouping variable {g!r} is not a column of the data")
        pos = {level: i for i, level in enumerate(lv)}
        codes = df[g].map(lambda x, pos=pos: pos.get(x, -1)).to_numpy(dtype=np.int64)
        ok &= codes >= 0
        idx = idx * len(lv) + np.maximum(codes, 0)
    return np.where(ok, idx, -1)


def stats_local(
    df: pd.DataFrame, spec: Any, *, dp: DpConfig | None = None
) -> tuple[np.ndarray, StatsLayout]:
    """Return this node's sums (layout :func:`stats_layout`) and the layout.

    With ``dp`` in ``distributed`` mode the node adds its share of discrete Gaussian noise
    (variance ``σ²/K`` per block-normalised entry); values are clipped to the public bounds
    whenever ``dp`` is given.

    Raises:
        StatsError: a variable is missing or not numeric, or DP without bounds.
    """
    layout = stats_layout(spec)
    if dp is not None:
        missing = [v for v in layout.variables if v not in layout.bounds]
        if missing:
            raise StatsError(f"stats.bounds: DP needs public bounds for {missing}")
    cell = _cell_index(df, layout)
    matched = cell >= 0
    n = layout.n_cells
    vec = np.zeros(layout.size)
    offsets = {name: (off, width) for name, off, width in layout.blocks}

    def put(name: str, values: np.ndarray) -> None:
        off, width = offsets[name]
        vec[off : off + width] = values

    c = cell[matched]
    put("rows", np.bincount(c, minlength=n))
    for v in layout.variables:
        if v not in df.columns:
            raise StatsError(f"variable {v!r} is not a column of the data")
        try:
            x = df[v].to_numpy(dtype=np.float64)[matched]
        except (TypeError, ValueError):
            raise StatsError(f"variable {v!r} is not numeric") from None
        if np.isinf(x).any():
            raise StatsError(f"variable {v!r} has infinite values")
        present = ~np.isnan(x)
        if dp is not None:
            x = np.clip(x, *layout.bounds[v])
        xc, cc = x[present], c[present]
        put(f"{v}:n", np.bincount(cc, minlength=n))
        put(f"{v}:sum", np.bincount(cc, weights=xc, minlength=n))
        put(f"{v}:sumsq", np.bincount(cc, weights=xc * xc, minlength=n))
        if v in layout.edges:
            e = np.asarray(layout.edges[v])
            slot = np.searchsorted(e, xc, side="right")  # 0 below, len(e) above
            slot[xc == e[-1]] = len(e) - 1  # the last bin is closed
            width = len(e) + 1
            put(f"{v}:hist", np.bincount(cc * width + slot, minlength=n * width))
    put("unmatched", np.array([float((~matched).sum())]))
    if dp is not None and dp.mode == "distributed":
        sigma = stats_noise_scale(layout, dp)
        share = sigma / math.sqrt(dp.n_nodes) / dp.granularity
        grid = dp_noise.discrete_gaussian_noise(layout.size, share) * dp.granularity
        vec = vec + grid * layout.block_scales() * dp.max_rows_per_subject
    return vec, layout


def _n_blocks(layout: StatsLayout) -> int:
    return len(layout.blocks)


def stats_noise_scale(layout: StatsLayout, dp: DpConfig) -> float:
    """Return the noise scale of the block-normalised vector per unit of per-row bound.

    The same scale sets the noise added (on the nodes or after the sum) and the charge a
    release records, so both read it here.
    """
    j = _n_blocks(layout)
    if dp.mechanism == "laplace":
        return dp_noise.calibrate_laplace(float(j), dp.epsilon)
    return dp_noise.calibrate_gaussian(math.sqrt(j), dp.epsilon, dp.delta)


@dataclass
class StatsResult:
    """A released statistics table.

    Attributes:
        cells: one entry per cell and margin: ``group`` (level or ``(all)`` per grouping
            variable), ``n`` (rows) and per variable the requested measures; suppressed
            entries carry ``suppressed`` and no values.
        suppressed: every suppressed cell with ``reason`` (primary / complementary).
        dp: mechanism, mode, ε, δ, noise scale, ε charged per node; None without DP.
    """

    group_by: list[str]
    levels: dict[str, list[int | str]]
    cells: list[dict[str, Any]]
    suppressed: list[dict[str, Any]]
    min_cell_count: int
    unmatched_rows: float
    dp: dict[str, Any] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Return the result as ``result.json`` content."""
        return {
            "kind": "stats",
            "group_by": self.group_by,
            "levels": self.levels,
            "min_cell_count": self.min_cell_count,
            "cells": self.cells,
            "suppressed": self.suppressed,
            "unmatched_rows": self.unmatched_rows,
            "dp": self.dp,
        }

    def cell(self, **group: int | str) -> dict[str, Any]:
        """Return the entry of one cell (omitted grouping variables mean the margin)."""
        want = {g: group.get(g, ALL) for g in self.group_by}
        for c in self.cells:
            if c["group"] == want:
                return c
        raise KeyError(group)


def _margin_sum(arr: np.ndarray, key: tuple[int | None, ...]) -> np.ndarray:
    """Sum a ``(*shape, w)`` array over the axes where ``key`` is None."""
    index = tuple(slice(None) if k is None else k for k in key)
    sub = arr[index]
    return sub.reshape(-1, arr.shape[-1]).sum(axis=0) if sub.ndim > 1 else sub


def _cells_in(layout: StatsLayout, key: tuple[int | None, ...]) -> int:
    return int(np.prod([s for s, k in zip(layout.shape, key, strict=True) if k is None] or [1]))


def _quantiles(hist: np.ndarray, edges: Sequence[float], probs: Sequence[float]) -> dict[str, Any]:
    """Interpolate quantiles linearly within the histogram's bins.

    A quantile that falls below the first edge or above the last is reported as that
    edge and listed under ``censored``.
    """
    h = np.clip(np.asarray(hist, dtype=np.float64), 0.0, None)
    total = h.sum()
    out: dict[str, Any] = {}
    censored = []
    if total <= 0:
        return {}
    cum = np.cumsum(h)
    e = np.asarray(edges)
    for q in probs:
        target = q * total
        slot = int(np.searchsorted(cum, target, side="left"))
        if slot == 0:
            val = float(e[0])
            censored.append(str(q))
        elif slot >= len(e):
            val = float(e[-1])
            censored.append(str(q))
        else:
            before = cum[slot - 1]
            frac = (target - before) / h[slot] if h[slot] > 0 else 0.0
            val = float(e[slot - 1] + frac * (e[slot] - e[slot - 1]))
        out[f"{q:g}"] = val
    if censored:
        out["censored"] = censored
    return out


def _label(layout: StatsLayout, key: Any) -> dict[str, int | str]:
    return {
        g: (ALL if k is None else lv[k])
        for g, lv, k in zip(layout.group_by, layout.levels, key, strict=True)
    }


def stats_finalize(
    summed: np.ndarray,
    layout: StatsLayout,
    spec: Any,
    min_cell_count: int,
    dp: DpConfig | None = None,
    *,
    n_contributing: int | None = None,
) -> StatsResult:
    """Release the statistics of the securely summed vector.

    ``dp`` in ``central`` mode adds the full noise here; in ``distributed`` mode the
    nodes already added it (``n_contributing`` of ``dp.n_nodes`` shares present: fewer
    shares mean less noise and a larger ε, which the result reports).

    Raises:
        StatsError: the vector has the wrong length.

    Proportions (with events-below-minimum suppression) are released for 0/1 variables:
    those declared with bounds (0, 1), or without DP those whose sum of squares equals
    their sum.
    """
    st = _stats_spec(spec)
    vec = np.asarray(summed, dtype=np.float64).copy()
    if vec.shape != (layout.size,):
        raise StatsError(f"expected {layout.size} summed entries, got {vec.shape}")
    measures = set(st.measures)
    noise_sd = np.zeros(layout.size)  # per-entry noise SD
    dp_info: dict[str, Any] | None = None
    if dp is not None:
        sigma = stats_noise_scale(layout, dp)
        m = dp.max_rows_per_subject
        scales = layout.block_scales() * m
        j = _n_blocks(layout)
        if dp.mode == "central":
            draw = dp_noise.laplace_noise if dp.mechanism == "laplace" else dp_noise.gaussian_noise
            vec = vec + draw(layout.size, sigma) * scales
            sd = sigma * math.sqrt(2.0) if dp.mechanism == "laplace" else sigma
            eps_eff = dp.epsilon
        else:
            k = dp.n_nodes if n_contributing is None else n_contributing
            sd = sigma * math.sqrt(k / dp.n_nodes)
            eps_eff = dp_noise.epsilon_for_gaussian(sd, math.sqrt(j), dp.delta)
        noise_sd = sd * scales
        dp_info = {
            "mechanism": "discrete_gaussian" if dp.mode == "distributed" else dp.mechanism,
            "mode": dp.mode,
            "epsilon": dp.epsilon,
            "delta": dp.delta if dp.mechanism == "gaussian" else 0.0,
            "epsilon_charged_per_node": dp.epsilon,
            "epsilon_effective": eps_eff,
            "noise_scale": sigma,
            "noise_sd_per_unit_sensitivity": sd,
            "blocks": j,
            **privacy_unit_summary(m),
            "nodes": dp.n_nodes,
            "nodes_contributing": n_contributing if n_contributing is not None else dp.n_nodes,
        }
    keys, lines = table_lines(layout.shape)
    rows = layout.block(vec, "rows")
    rows_sd = layout.block(noise_sd, "rows")
    counts: dict[Any, float] = {}
    row_var: dict[Any, float] = {}
    for key in keys:
        counts[key] = float(_margin_sum(rows, key).sum())
        row_var[key] = float((_margin_sum(rows_sd**2, key)).sum())
    binary = {
        v
        for v in layout.variables
        if layout.bounds.get(v) == (0.0, 1.0) or (dp is None and _is_binary_total(vec, layout, v))
    }
    flagged: dict[Any, str] = {}
    if "proportion" in measures:
        for v in sorted(binary):
            events = layout.block(vec, f"{v}:sum")
            for key in keys:
                ev = float(_margin_sum(events, key).sum())
                if 0 < ev < min_cell_count:
                    flagged[key] = f"{v}: {ev:.0f} events < {min_cell_count}"
    suppressions = suppress_cells(counts, lines, min_cell_count, flagged=flagged)
    hidden = {s.key: s for s in suppressions}
    cells: list[dict[str, Any]] = []
    for key in keys:
        entry: dict[str, Any] = {"group": _label(layout, key), "margin": None in key}
        if key in hidden:
            entry["suppressed"] = hidden[key].reason
            cells.append(entry)
            continue
        entry["n"] = counts[key]
        entry["variables"] = {
            v: _variable_stats(
                vec, noise_sd, layout, v, key, st, measures, dp is not None, v in binary
            )
            for v in layout.variables
        }
        cells.append(entry)
    return StatsResult(
        group_by=list(layout.group_by),
        levels={g: list(lv) for g, lv in zip(layout.group_by, layout.levels, strict=True)},
        cells=cells,
        suppressed=[
            {"group": _label(layout, s.key), "reason": s.reason, "detail": s.detail}
            for s in suppressions
        ],
        min_cell_count=min_cell_count,
        unmatched_rows=float(layout.block(vec, "unmatched")[0]),
        dp=dp_info,
    )


def _is_binary_total(vec: np.ndarray, layout: StatsLayout, v: str) -> bool:
    """Return whether ``v`` looks 0/1 over all cells: its sum of squares equals its sum."""
    s = float(layout.block(vec, f"{v}:sum").sum())
    q = float(layout.block(vec, f"{v}:sumsq").sum())
    n = float(layout.block(vec, f"{v}:n").sum())
    return abs(q - s) <= 1e-6 * max(n, 1.0)


def _variable_stats(
    vec: np.ndarray,
    noise_sd: np.ndarray,
    layout: StatsLayout,
    v: str,
    key: tuple[int | None, ...],
    st: Any,
    measures: set[str],
    noisy: bool,
    binary: bool,
) -> dict[str, Any]:
    def total(name: str) -> tuple[float, float]:
        val = float(_margin_sum(layout.block(vec, name), key).sum())
        var = float(_margin_sum(layout.block(noise_sd, name) ** 2, key).sum())
        return val, var

    n, var_n = total(f"{v}:n")
    s, var_s = total(f"{v}:sum")
    q, _ = total(f"{v}:sumsq")
    out: dict[str, Any] = {"count": n}
    if "sum" in measures:
        out["sum"] = s
    mean = s / n if n > 0 else None
    variance = max((q - s * s / n) / (n - 1), 0.0) if n > 1 else None
    if "mean" in measures and mean is not None:
        out["mean"] = mean
        if variance is not None:
            if noisy:
                se = math.sqrt(variance / n + (var_s + mean * mean * var_n) / (n * n))
                half = _Z975 * se
            else:
                se = math.sqrt(variance / n)
                half = float(sps.t.ppf(0.975, n - 1)) * se
            out["mean_ci"] = [mean - half, mean + half]
    if "variance" in measures and variance is not None:
        out["variance"] = variance
        out["sd"] = math.sqrt(variance)
    if "proportion" in measures and mean is not None and binary:
        p = min(max(mean, 0.0), 1.0)
        if noisy:
            se = math.sqrt(p * (1 - p) / n + (var_s + p * p * var_n) / (n * n))
            ci = [max(p - _Z975 * se, 0.0), min(p + _Z975 * se, 1.0)]
        else:
            z2 = _Z975**2
            centre = (p + z2 / (2 * n)) / (1 + z2 / n)
            half = _Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
            ci = [centre - half, centre + half]
        out["proportion"] = p
        out["proportion_ci"] = ci
    if v in layout.edges and {"histogram", "quantile"} & measures:
        hist = _margin_sum(layout.block(vec, f"{v}:hist"), key)
        if "histogram" in measures:
            out["histogram"] = {"edges": list(layout.edges[v]), "counts": hist.tolist()}
        if "quantile" in measures:
            out["quantiles"] = _quantiles(hist, layout.edges[v], st.quantiles)
    return out
