"""Outbound inspection of a complete-case statistics job with a per-resident cap.

Two nodes hold checkups with values missing; the job asks for complete cases and DP with
a per-resident row cap. Every reply the server receives and every reply as it leaves a
node is recorded; the nodes send their complete-case counts and the rows the cap dropped
in the clear (both on the allow-list), small counts only as "fewer than 10", and nothing
else outside SecAgg+'s masked vectors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbound_harness import (  # noqa: E402
    NodeSecrets,
    OutboundItem,
    allowed_clear_key,
    inspect_outbound,
    load_recorded,
    recording_mod,
    recording_server_app,
    with_mods,
)

SPEC = {
    "kind": "stats",
    "domain": "checkups",
    "min_nodes": 2,
    "complete_case": True,
    "stats": {
        "measures": ["count", "mean"],
        "variables": ["glucose", "hba1c"],
        "bounds": {"glucose": [40, 600], "hba1c": [3, 20]},
        "min_cell_count": 10,
    },
    "privacy": {"epsilon": 1.0, "delta": 1e-6, "max_rows_per_subject": 1},
}


def _nodes(tmp_path: Path) -> dict[str, pd.DataFrame]:
    from nodes.scenario.generator import generate

    data = tmp_path / "data"
    generate("iwamizawa", data, years=[2019, 2020], scale=0.3)
    rng = np.random.default_rng(7)
    frames = {}
    for name, (n_glucose, n_hba1c) in {"city": (60, 4), "insurer": (25, 12)}.items():
        frame = pd.read_csv(data / name / "checkups.csv")
        rows = rng.choice(len(frame), n_glucose + n_hba1c, replace=False)
        frame.loc[rows[:n_glucose], "glucose"] = np.nan
        frame.loc[rows[n_glucose:], "hba1c"] = np.nan
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "checkups.csv", index=False)
        frames[name] = frame
    return frames


@pytest.mark.slow
def test_complete_case_stats_job_sends_only_allowed_counts(tmp_path, monkeypatch):
    import hamanasu.analytics_run as ar
    from federation.spec import parse_job_spec
    from nodes.sources import NodeSource

    frames = _nodes(tmp_path)
    spec = parse_job_spec(SPEC)
    node_out = tmp_path / "node-out"
    server_items: list[OutboundItem] = []
    real_build, real_run = ar.build_sum_client_app, ar.run_embedded
    monkeypatch.setattr(
        ar,
        "build_sum_client_app",
        lambda *a, **k: with_mods(real_build, *a, **k, before=[recording_mod(node_out, "out")]),
    )
    monkeypatch.setattr(
        ar, "run_embedded", lambda s, c, n: real_run(recording_server_app(s, server_items), c, n)
    )
    nodes = [NodeSource(n, tmp_path / n) for n in frames]
    result = ar.run_sum_job(spec, nodes, job_id="outbound-cc", max_records=5000)
    assert result["status"] == "succeeded", result.get("reason")
    assert set(result["complete_case_by_node"]) == {"city", "insurer"}
    assert set(result["rows_dropped_by_node"]) == {"city", "insurer"}

    secrets = [
        NodeSecrets(
            name,
            {c: f[c].to_numpy(dtype=float) for c in f.select_dtypes("number").columns},
            frozenset(f["subject"]),
            [],
        )
        for name, f in frames.items()
    ]
    items = [*server_items, *load_recorded(node_out)]
    assert inspect_outbound(items, secrets) == []
    clear = {
        it.key: it.value
        for it in items
        if it.key.startswith(("config_records/", "metric_records/"))
    }
    assert all(allowed_clear_key(k) for k in clear), sorted(clear)
    metrics = "config_records/fitres.metrics/"
    assert {
        f"{metrics}rows_dropped",
        f"{metrics}complete_case.rows_read",
        f"{metrics}complete_case.rows_dropped",
        f"{metrics}complete_case.missing.glucose",
        f"{metrics}complete_case.missing.hba1c",
    } <= set(clear), sorted(clear)


def test_harness_flags_a_small_complete_case_count_and_an_unknown_key():
    base = "config_records/fitres.metrics/"

    def item(key, value):
        return OutboundItem("server", "0", "train", base + key, value)

    secrets = [NodeSecrets("a", {}, frozenset(), [])]
    allowed = [
        item("complete_case.rows_read", 812),
        item("complete_case.rows_dropped", -1),
        item("complete_case.missing.glucose", 0),
        item("rows_dropped", 3),
    ]
    assert inspect_outbound(allowed, secrets) == []
    kinds = [
        f.kind
        for f in inspect_outbound(
            [item("complete_case.missing.glucose", 4), item("complete_case.subjects", 1)],
            secrets,
        )
    ]
    assert kinds == ["small_count", "unlisted_clear_value"]
