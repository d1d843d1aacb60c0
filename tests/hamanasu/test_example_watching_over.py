"""The living-service example: watching-over alerts (city) by checkup blood pressure
(insurer), a linked statistics job run with ``hamanasu simulate`` on generated data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nodes.scenario import linked_views as views
from nodes.scenario.generator import generate
from tests.hamanasu.up_process import simulate

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples" / "iwamizawa" / "watching_over_by_bp.toml"
)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.slow
def test_watching_over_alerts_by_insurer_checkup_bp_through_simulate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    manifest = generate("iwamizawa", data)
    city, insurer = manifest.node("city"), manifest.node("insurer")
    alerts = views.alerts_per_resident(_read(data / "city" / city.files["watching_over"]))
    bp = views.checkup_bp_group(_read(data / "insurer" / insurer.files["checkups"]))
    alerts.to_csv(tmp_path / "city-alerts.csv", index=False)
    bp[["subject", "bp_group"]].to_csv(tmp_path / "insurer-bp.csv", index=False)

    out = tmp_path / "out"
    proc = simulate(
        EXAMPLE,
        {"city": tmp_path / "city-alerts.csv", "insurer": tmp_path / "insurer-bp.csv"},
        out,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "alerts_per_year" in proc.stdout  # the summary table
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "succeeded" and result["linked"] is True
    assert result["holders"] == {
        "city": ["alerts_per_year", "urgent_share"],
        "insurer": ["bp_group"],
    }

    pooled = alerts.merge(bp, on="subject")  # what the two holders could compute together
    assert result["linked_n"] == len(pooled)
    cells = {c["group"]["bp_group"]: c for c in result["cells"]}
    for group, rows in pooled.groupby("bp_group"):
        got = cells[group]["variables"]["alerts_per_year"]
        assert cells[group]["n"] == len(rows) >= 10
        assert got["mean"] == pytest.approx(rows["alerts_per_year"].mean(), rel=1e-6)
    # the generator's relation shows: more alerts after a history of high blood pressure
    high = cells["high"]["variables"]["alerts_per_year"]["mean"]
    normal = cells["normal"]["variables"]["alerts_per_year"]["mean"]
    assert high > normal
