"""``hamanasu demo`` end to end: scenario, node set-up, refusal, DP + SecAgg+ training, report."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "hamanasu", "demo", "--out", str(out), "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    training = report["training"]
    assert training["status"] == "succeeded", training["reason"]
    assert training["secure_aggregation"] is True
    assert sorted(training["nodes"]) == ["city-hospital", "women-clinic"]
    spent = training["privacy"]["epsilon_spent_by_node"]
    assert all(0 < eps <= training["privacy"]["epsilon_target"] for eps in spent.values())
    assert training["data_sizes"]["city-hospital"] > 1000
    # The commercial job: allowed by the hospital, refused by the clinic, not run.
    refusal = report["refusal"]
    assert refusal["nodes"]["women-clinic"]["outcome"] == "deny"
    assert "commercial_not_allowed" in [
        r["code"] for r in refusal["nodes"]["women-clinic"]["reasons"]
    ]
    assert refusal["ran"] is False
    # Each node's ledger holds one usage entry per round that read data (two training
    # rounds and the final evaluation round), with a commitment.
    for name, ledger in training["ledger"].items():
        # (a round retried after a SecAgg+ halt logs its second read too)
        assert sorted({u["round"] for u in ledger["usage"]}) == [1, 2, 3], name
        assert all(len(u["subject_commitment"]) == 64 for u in ledger["usage"])
        # Consent filtering: fewer subjects used than rows held.
        assert ledger["usage"][0]["n_subjects"] < training["data_sizes"][name]
    assert (out / "training.png").stat().st_size > 10_000
    # The consortium's questions: LBW rate by year (DP, suppression) and adjusted ORs.
    rates = report["lbw_rate_by_year"]
    assert rates["status"] == "succeeded", rates.get("reason")
    years = [c["group"]["year"] for c in rates["cells"] if not c.get("margin")]
    assert years == list(range(2013, 2026))
    assert rates["dp"]["mode"] == "distributed" and rates["dp"]["epsilon_charged_per_node"] <= 3.0
    overall = next(c for c in rates["cells"] if c.get("margin"))["variables"]["lbw"]["proportion"]
    assert 0.05 < overall < 0.11
    assert (out / "rates.png").exists()
    ors = report["adjusted_odds_ratios"]
    assert ors["status"] == "succeeded", ors.get("reason")
    assert ors["coefficients"]["multiple"]["odds_ratio"] > 10  # multiples dominate LBW
    assert 1 < ors["coefficients"]["smoking"]["odds_ratio"] < 5
    assert ors["coefficients"]["gwg_kg"]["odds_ratio"] < 1
    assert (out / "odds_ratios.png").exists()
    # Node keys are private.
    key = out / "nodes" / "city-hospital" / "keys" / "node_ed25519.pem"
    assert key.stat().st_mode & 0o777 == 0o600
