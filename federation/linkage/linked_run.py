"""A whole linked job over holders' tables: locate columns, align by PSI, compute by MPC.

This is the embedded path (every holder's table on this machine, each party its own
process): :func:`linked_glm` and :func:`linked_stats` take one table per holder (the key
column plus that holder's columns, already limited by the holder's gate to residents
whose consent permits the purpose), find which holder holds which column, align the
rows by :func:`federation.linkage.psi.align_cohort` (the outcome's or grouping holder is
the anchor), and run the parties with :func:`federation.linkage.launch.run_local_parties`
(the holders plus a helper party that holds no data). Only the released result comes
back: the same shape as the horizontal kinds, plus ``linked_n`` and ``holders`` (which
holder contributed which columns).

With ``privacy`` (a job's ``[privacy]`` table: ε, δ, rows per resident) the noise is added
inside the computation (:mod:`federation.linkage.mpc_noise`), calibrated as the
horizontal kinds are (ε less :data:`federation.plans.stats.CALIBRATION_MARGIN`, PLD), and
``on_charge(holder, k, epsilon, mechanism)`` is called for every holder before release
``k`` opens: the embedded runner charges that holder's budget there, as the horizontal
ClientApp does before each round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from federation.linkage.errors import LinkageRefusal
from federation.linkage.jobs import LinkedGlmJob, LinkedStatsJob, Term
from federation.linkage.launch import PartyRun, run_local_parties
from federation.linkage.mpc_noise import LinkedDp
from federation.linkage.psi import PsiHolder, Relay, align_cohort

__all__ = ["HELPER", "HolderTable", "linked_glm", "linked_stats", "locate_columns"]

#: Name of the party that holds no data (the coordinator's, or the embedded runner's).
HELPER = "helper"


@dataclass
class HolderTable:
    """One holder's rows for a linked job: ``key`` column plus its own columns."""

    name: str
    frame: pd.DataFrame
    min_cohort: int = 0


def locate_columns(holders: Sequence[HolderTable], columns: Sequence[str],
                   key: str) -> dict[str, tuple[int, str]]:
    """Return, per requested column, ``(holder index, column name in that holder's table)``.

    A column may be qualified ``holder.column`` where more than one holder has it.

    Raises:
        LinkageRefusal: ``columns_not_held`` naming the columns no holder (or more than
            one, unqualified) holds.

    """
    out: dict[str, tuple[int, str]] = {}
    missing: list[str] = []
    for col in columns:
        owner, _, bare = col.rpartition(".")
        if owner:
            hit = [i for i, h in enumerate(holders) if h.name == owner and bare in h.frame]
        else:
            hit = [i for i, h in enumerate(holders) if col in h.frame and col != key]
        if len(hit) != 1:
            missing.append(col if not hit else f"{col} (at {len(hit)} holders: qualify it)")
            continue
        out[col] = (hit[0], bare if owner else col)
    if missing:
        raise LinkageRefusal("columns_not_held", f"no single holder holds {missing}")
    return out


Cohort = Callable[[str, list[str]], None]
Charge = Callable[[str, int, float, dict[str, Any]], None]


def _linked_dp(privacy: Any, holders: int, rounds: int, y_bound: float = 1.0,
               bounds: tuple[tuple[float, float], ...] = ()) -> LinkedDp:
    """Return the DP settings without σ (σ depends on what is opened: the caller's)."""
    from federation.plans.stats import CALIBRATION_MARGIN

    parties = holders + 1
    return LinkedDp(epsilon=float(privacy.epsilon) * (1 - CALIBRATION_MARGIN),
                    delta=float(privacy.delta), sigma=0.0, parties=parties,
                    threshold=(parties - 1) // 2,
                    max_rows_per_subject=int(privacy.max_rows_per_subject), rounds=rounds,
                    y_bound=float(y_bound), bounds=bounds)


def _align(holders: Sequence[HolderTable], key: str, used: dict[int, list[str]],
           anchor: int, relay: Relay | None, *, complete: bool,
           on_cohort: Cohort | None = None) -> tuple[list[int], dict[int, pd.DataFrame]]:
    order = [anchor] + [i for i in sorted(used) if i != anchor]
    frames: dict[int, pd.DataFrame] = {}
    for i in order:
        h = holders[i]
        if key not in h.frame:
            raise LinkageRefusal("columns_not_held", f"{h.name} has no key column {key!r}")
        # A model uses complete rows only; statistics count missing values per variable.
        frames[i] = h.frame[[key, *used[i]]].dropna(subset=[key, *used[i]] if complete
                                                   else [key])
    psi = [PsiHolder(holders[i].name, frames[i][key].astype(str).tolist(),
                     holders[i].min_cohort) for i in order]
    res = align_cohort(psi, relay)
    for i in order:  # each holder's usage entry, before its columns are shared
        if on_cohort is not None:
            on_cohort(holders[i].name, res.cohort[holders[i].name])
    aligned = {}
    for i in order:
        f = frames[i].assign(_k=frames[i][key].astype(str))
        rows = f.set_index("_k").loc[res.cohort[holders[i].name]]
        aligned[i] = rows.reset_index(drop=True)
    return order, aligned


def linked_glm(
    holders: Sequence[HolderTable],
    *,
    key: str,
    outcome: str,
    terms: Sequence[str],
    family: str,
    ranges: Mapping[str, tuple[float, float]],
    relay: Relay | None = None,
    timeout: float = 3600.0,
    on_start: Callable[[list[PartyRun]], None] | None = None,
    on_cohort: Cohort | None = None,
    privacy: Any | None = None,
    y_bound: float = 1.0,
    max_iterations: int = 25,
    on_charge: Charge | None = None,
    mpc_route: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, Any]:
    """Fit a GLM (intercept plus ``terms``) whose columns lie at different holders.

    ``ranges`` are the declared (public) ranges of the terms; they scale the terms into
    [-1, 1] inside the computation (the fit is exact whatever the scaling).
    ``on_cohort(holder, members)`` is called per holder once the cohort is known and
    before any column is shared (the holder's usage entry; raising stops the job).
    ``privacy``, ``y_bound`` (outcome clipped to ``|y| <= y_bound``) and ``on_charge``: the
    module doc; ``max_iterations`` also fixes the rounds DP noise is calibrated for;
    ``mpc_route``: :func:`federation.linkage.launch.run_local_parties`'s ``route``.

    Returns:
        The horizontal GLM result mapping plus ``linked_n`` and ``holders`` (with DP also
        ``dp``, and ``linked_n`` is the noisy count).

    Raises:
        LinkageRefusal: columns not held, a cohort under some holder's minimum, fewer
            than three parties.
        LinkageError: a party failed; ValueError: a term without a declared range, or
            DP with the poisson family.

    """
    from federation.linkage.mpc_glm import dp_noise_model

    where = locate_columns(holders, [outcome, *terms], key)
    missing = [t for t in terms if t not in ranges]
    if missing:
        raise ValueError(f"terms without a declared range: {missing}")
    if privacy is not None and family == "poisson":
        raise ValueError("a DP GLM is binomial or gaussian (poisson weights are unbounded)")
    used: dict[int, list[str]] = {}
    for col in [outcome, *terms]:
        used.setdefault(where[col][0], []).append(where[col][1])
    dp = None if privacy is None else _linked_dp(privacy, len(used), max_iterations + 1, y_bound)
    order, aligned = _align(holders, key, used, where[outcome][0], relay, complete=True,
                            on_cohort=on_cohort)
    party = {h: p for p, h in enumerate(order)}
    model_terms = [Term("Intercept", 0)]
    for t in terms:
        lo, hi = (float(v) for v in ranges[t])
        model_terms.append(Term(t, party[where[t][0]], (lo + hi) / 2, max((hi - lo) / 2, 1e-12)))
    n = len(aligned[order[0]])
    job = LinkedGlmJob(family, tuple(model_terms), 0, n, max_iterations=max_iterations)
    release = None
    if dp is not None:
        noise = dp_noise_model(job, dp)
        dp = replace(dp, sigma=noise.sigma)
        job = replace(job, dp=dp.to_json_dict())

        def release(holder: str, k: int) -> None:
            if on_charge is not None:
                rise = noise.epsilon_after(k) - noise.epsilon_after(k - 1)
                on_charge(holder, k, rise, noise.round_mechanism())
    inputs: list[dict[str, np.ndarray] | None] = []
    for p, h in enumerate(order):
        cols = [where[t.name][1] for t in model_terms if t.party == p and t.name != "Intercept"]
        x = aligned[h][cols].to_numpy(dtype=np.float64)
        data = {"x": np.column_stack([np.ones(n), x]) if p == 0 else x}
        if p == 0:
            data["y"] = aligned[h][where[outcome][1]].to_numpy(dtype=np.float64)
        inputs.append(data)
    result = run_local_parties(job, [*inputs, None],
                               [holders[h].name for h in order] + [HELPER],
                               timeout=timeout, on_start=on_start, on_release=release,
                               route=mpc_route)
    result["holders"] = {holders[h].name: used[h] for h in order}
    if dp is not None:  # the traffic follows the exact cohort size
        result.pop("mpc_traffic", None)
    return result


def linked_stats(
    holders: Sequence[HolderTable],
    *,
    key: str,
    group_by: Sequence[str],
    levels: Mapping[str, Sequence[Any]],
    variables: Sequence[str],
    relay: Relay | None = None,
    timeout: float = 3600.0,
    on_cohort: Cohort | None = None,
    privacy: Any | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    on_charge: Charge | None = None,
    mpc_route: Callable[[list[str]], list[str]] | None = None,
) -> tuple[np.ndarray, int, dict[str, list[str]]]:
    """Compute the horizontal statistics vector of the holders' inner join.

    With ``privacy`` every variable needs public ``bounds`` (values are clipped to them)
    and the vector carries noise of scale
    :func:`federation.analytics.stats.stats_noise_scale` per unit of each entry's bound;
    ``on_charge`` as the module doc says (one release); ``mpc_route`` as for
    :func:`linked_glm`.

    Returns:
        ``(vector, linked_n, holders)``: the vector in the layout of
        :func:`federation.analytics.stats.stats_layout` (no histogram blocks), ready for
        :func:`federation.analytics.stats.stats_finalize`; the cohort size (with DP the
        noisy one: rows plus unmatched); which holder contributed which columns.

    Raises:
        LinkageRefusal / LinkageError: as :func:`linked_glm`; ValueError: DP and a
            variable without bounds.

    """
    from federation.analytics.dp_noise import calibrate_gaussian

    where = locate_columns(holders, [*group_by, *variables], key)
    used: dict[int, list[str]] = {}
    for col in [*group_by, *variables]:
        used.setdefault(where[col][0], []).append(where[col][1])
    dp = None
    if privacy is not None:
        unbounded = [v for v in variables if v not in (bounds or {})]
        if unbounded:
            raise ValueError(f"stats.bounds: DP needs public bounds for {unbounded}")
        dp = _linked_dp(privacy, len(used), 1,
                        bounds=tuple((float(bounds[v][0]), float(bounds[v][1]))
                                     for v in variables))  # type: ignore[index]
        blocks = 2 + 3 * len(variables)  # rows, (n, sum, sumsq) per variable, unmatched
        # the horizontal statistics' calibration (stats_noise_scale) for these blocks
        dp = replace(dp, sigma=calibrate_gaussian(math.sqrt(blocks), dp.epsilon, dp.delta))
    anchor = where[group_by[0]][0] if group_by else where[variables[0]][0]
    order, aligned = _align(holders, key, used, anchor, relay, complete=False,
                            on_cohort=on_cohort)
    party = {h: p for p, h in enumerate(order)}
    n = len(aligned[order[0]])
    group = tuple((g, party[where[g][0]], len(levels[g])) for g in group_by)
    values = tuple((v, party[where[v][0]]) for v in variables)
    job = LinkedStatsJob(group, values, n, dp=None if dp is None else dp.to_json_dict())
    release = None
    if dp is not None and on_charge is not None:
        charged = dp.epsilon, {"type": "gaussian", "sigma": dp.sigma,
                               "sensitivity": math.sqrt(2 + 3 * len(variables))}

        def release(holder: str, k: int) -> None:
            on_charge(holder, k, *charged)  # type: ignore[misc]
    inputs: list[dict[str, np.ndarray] | None] = []
    for p, h in enumerate(order):
        data: dict[str, np.ndarray] = {}
        mine_g = [g for g in group_by if party[where[g][0]] == p]
        if mine_g:
            codes = []
            for g in mine_g:
                pos = {lv: i for i, lv in enumerate(levels[g])}
                col = aligned[h][where[g][1]]
                codes.append(col.map(lambda x, pos=pos: pos.get(x, -1)).fillna(-1).astype(int))
            data["codes"] = np.column_stack(codes)
        mine_v = [v for v in variables if party[where[v][0]] == p]
        if mine_v:
            data["values"] = aligned[h][[where[v][1] for v in mine_v]].to_numpy(np.float64)
        inputs.append(data)
    out = run_local_parties(job, [*inputs, None], [holders[h].name for h in order] + [HELPER],
                            timeout=timeout, on_release=release, route=mpc_route)
    vec = np.asarray(out["vector"])
    if dp is not None:  # the released count is the noisy one
        n_cells = int(np.prod([g[2] for g in group])) if group else 1
        n = max(0, round(float(vec[:n_cells].sum() + vec[-1])))
    return vec, n, {holders[h].name: used[h] for h in order}
