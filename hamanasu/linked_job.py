"""Embedded run of a linked job (a ``[link]`` table): each ``--node`` file is one holder.

Each holder's file holds the linkage key (``subject`` or ``mother``) and that holder's
columns, one row per key. The columns the job names are looked up across the holders'
headers (a name held by several holders is qualified ``holder.column`` or
``domain.column``); the embedded runner plays the helper party, so two holders make the
three parties secure computation needs. Alignment and computation are
:func:`federation.linkage.linked_run.linked_glm` / ``linked_stats``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hamanasu.errors import UsageError

__all__ = ["run_linked_job"]


def _tables(spec: Any, nodes: list[Any]) -> list[Any]:
    from federation.linkage.linked_run import HolderTable
    from nodes.data_loading import DataValidationError, load_any, read_header
    from nodes.sources import find_table

    key = spec.link.key
    wanted = spec.columns()
    out = []
    for node in nodes:
        frames: list[pd.DataFrame] = []
        domains = {spec.domain} | {c.split(".", 1)[0] for c in wanted if "." in c}
        seen: set[Path] = set()
        for domain in sorted(domains):
            try:
                path = find_table(node.data, domain)
            except FileNotFoundError:
                continue
            if path in seen:
                continue
            seen.add(path)
            try:
                header = read_header(path)
                bare = {c.split(".", 1)[-1] for c in wanted}
                cols = [key, *sorted(c for c in bare if c in header and c != key)]
                if key not in header:
                    raise UsageError(f"--node {node.name}: {path.name} has no key column {key!r}")
                frame = load_any(path, [], None)[cols]  # numbers are checked in the parties
            except DataValidationError as exc:
                raise UsageError(f"--node {node.name}: {exc}") from None
            frames.append(frame)
        if not frames:
            raise UsageError(f"--node {node.name}: no table with the key column {key!r}")
        merged = frames[0]
        for f in frames[1:]:
            merged = merged.merge(f, on=key, how="outer")
        if merged[key].duplicated().any():
            raise UsageError(f"--node {node.name}: the key {key!r} repeats (one row per key)")
        out.append(HolderTable(node.name, merged))
    return out


def _qualify(spec: Any, holders: list[Any]) -> dict[str, str]:
    """Map each requested name to the name :func:`locate_columns` understands."""
    names = {h.name for h in holders}
    out = {}
    for c in spec.columns():
        owner, _, bare = c.partition(".")
        out[c] = c if (bare and owner in names) else (bare or c)
    return out


def _gate(spec: Any, job_id: str, holders: list[Any], gates: Mapping[str, Any]) -> None:
    """Keep, at each gated holder, the rows its gate lets this job use now.

    The gate checks the policy (linkage allowed for this purpose), consent for the
    purpose now (of the key's resident) and the minimum cohort; it raises ``JobRefused``.
    """
    key = spec.link.key
    for h in holders:
        gate = gates.get(h.name)
        if gate is None:
            continue
        frame = h.frame if key == "subject" else h.frame.assign(subject=h.frame[key])
        kept = gate.select(spec, job_id, 1, frame)
        h.frame = kept[h.frame.columns]
        h.min_cohort = int(gate.policy().min_cohort)


def _stats_bounds(spec: Any) -> dict[str, tuple[float, float]]:
    """Return every statistics variable's public bounds (the spec's, else the declared).

    Raises:
        UsageError: a variable without either (DP needs them).
    """
    from federation.cdm import declared_ranges

    out = {}
    for v in spec.stats.variables:
        domain, _, bare = v.rpartition(".")
        got = spec.stats.bounds.get(v) or declared_ranges(domain or spec.domain).get(bare or v)
        if got is None:
            raise UsageError(f"stats.bounds: DP needs public bounds for {v!r}")
        out[v] = (float(got[0]), float(got[1]))
    return out


def _stats_dp(spec: Any, holders: int) -> Any:
    """Return the statistics release's DP settings of a linked job (None without DP).

    Noise was added inside the computation: ``holders + 1`` shares, each of scale
    ``σ / sqrt(parties - threshold)`` (:mod:`federation.linkage.mpc_noise`), which
    :func:`stats_finalize` reads as a distributed release with that many nodes.
    """
    from federation.analytics.dp_noise import DpConfig
    from federation.plans.stats import CALIBRATION_MARGIN

    if spec.privacy is None:
        return None
    parties = holders + 1
    return DpConfig(epsilon=spec.privacy.epsilon * (1 - CALIBRATION_MARGIN),
                    delta=spec.privacy.delta, mode="distributed",
                    n_nodes=parties - (parties - 1) // 2,
                    max_rows_per_subject=spec.privacy.max_rows_per_subject)


def run_linked_job(
    spec: Any,
    nodes: list[Any],
    out: Path,
    *,
    gates: Mapping[str, Any] | None = None,
    job_id: str = "linked",
) -> dict[str, Any]:
    """Run the linked ``stats`` or ``glm`` job over the nodes' files; draw its plot.

    With ``gates`` (node name -> :class:`nodes.enforcement.EnforcementPoint`), each
    holder's gate selects its rows first, and its usage entry (the linked cohort at that
    holder) is written once alignment is done, before its columns are shared.

    Returns:
        The result JSON (``status`` succeeded or failed with ``reason``).

    Raises:
        UsageError: bad files or columns for this job.

    """
    from federation.analytics.stats import stats_finalize, stats_layout
    from federation.cdm import declared_ranges
    from federation.linkage.errors import LinkageError
    from federation.linkage.linked_run import linked_glm, linked_stats, locate_columns
    from nodes.client_app import RoundUse
    from nodes.enforcement import JobRefused

    holders = _tables(spec, nodes)
    cohort: dict[str, list[str]] = {}
    first = 0 if spec.privacy is not None else 1  # with DP, releases are rounds 1, 2, ...

    def usage(holder: str, members: list[str]) -> None:
        cohort[holder] = members
        gate = (gates or {}).get(holder)
        if gate is not None:
            gate.commit(spec, RoundUse(job_id, first, "linked", members, 0.0, 0.0,
                                       {"type": "none"}))

    def charge(holder: str, k: int, epsilon: float, mechanism: dict[str, Any]) -> None:
        gate = (gates or {}).get(holder)
        if gate is not None:
            gate.commit(spec, RoundUse(job_id, k, "release", cohort[holder], epsilon,
                                       spec.privacy.delta, mechanism))

    name = _qualify(spec, holders)
    key = spec.link.key
    try:
        _gate(spec, job_id, holders, gates or {})
        locate_columns(holders, [name[c] for c in spec.columns()], key)
        if spec.kind == "glm":
            if spec.glm.categorical:
                raise UsageError("glm.categorical: linked GLMs take numeric or 0/1 terms")
            ranges: dict[str, tuple[float, float]] = {}
            for f in spec.features:
                domain, _, bare = f.rpartition(".")
                declared = {**declared_ranges(domain or spec.domain), **spec.glm.bounds}
                got = declared.get(f, declared.get(bare or f))
                if got is None:
                    raise UsageError(f"glm.bounds: {f!r} needs a declared range")
                ranges[name[f]] = (float(got[0]), float(got[1]))
            result = linked_glm(holders, key=key, outcome=name[spec.label],
                                terms=[name[f] for f in spec.features], family=spec.glm.family,
                                ranges=ranges, on_cohort=usage, privacy=spec.privacy,
                                y_bound=spec.glm.y_bound, on_charge=charge,
                                max_iterations=spec.glm.max_iterations)
            result.update(status="succeeded", linked=True)
            from hamanasu.plots import plot_forest

            plot_forest(result, out / "forest.png")
            result["plot"] = "forest.png"
            return result
        bounds = _stats_bounds(spec) if spec.privacy is not None else {}
        vec, linked_n, who = linked_stats(
            holders, key=key, group_by=[name[g] for g in spec.stats.group_by],
            levels={name[g]: spec.stats.levels.get(g, []) for g in spec.stats.group_by},
            variables=[name[v] for v in spec.stats.variables], on_cohort=usage,
            privacy=spec.privacy, bounds={name[v]: b for v, b in bounds.items()},
            on_charge=charge,
        )
        floor = max([spec.stats.min_cell_count]
                    + [int(g.policy().min_cell_count) for g in (gates or {}).values()])
        bounded = spec.model_copy(update={"stats": spec.stats.model_copy(
            update={"bounds": {**spec.stats.bounds, **bounds}})})
        released = stats_finalize(vec, stats_layout(bounded), bounded, floor,
                                  _stats_dp(spec, len(who)), n_contributing=len(who) + 1)
        out = released.to_json_dict()
        if out["dp"] is not None:
            out["dp"].pop("nodes_contributing", None)
            out["dp"].update(mode="secret_shared", noise_shares=len(who) + 1,
                             collusion_threshold=len(who) // 2, nodes=len(who))
        out.update(status="succeeded", linked=True, linked_n=linked_n, holders=who)
        return out
    except (LinkageError, JobRefused) as exc:
        return {"status": "failed", "kind": spec.kind, "linked": True, "reason": str(exc)}
