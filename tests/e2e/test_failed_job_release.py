"""A job that fails at one node: what the other nodes stay charged for, and why, is recorded.

A real two-node training job runs on the embedded engine through the coordinator's
embedded runner. After round 1 every resident of the women's clinic withdraws, so the
clinic refuses round 2 and the job fails. The city hospital had already committed
round 2 (usage entry, charge) and sent its noised update: its reservation is released
and the ``budget.released`` ledger entry names every round that stays charged and why;
the clinic, refused before its round-2 read, is charged for round 1 only.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from federation.spec import load_job_spec
from hamanasu.local_runner import EmbeddedRunner, LocalNode
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint, failed_job_reason
from nodes.scenario import generate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "iwamizawa"
NODES = ("city-hospital", "women-clinic")
JOB = "lbw-fails-1"


def test_failed_job_reason_names_the_charged_rounds_and_stays_short() -> None:
    text = failed_job_reason("job failed: " + "x" * 900, [3, 1, 2, 2])
    assert len(text) <= 500 and "round(s) 1, 2, 3 stay charged" in text
    assert text.startswith("job failed: xx") and text.endswith("produced no result")
    many = failed_job_reason("job failed", list(range(1, 21)))
    assert "1, 2, 3, 4, 5, 6, 7, 8 and 12 more stay charged" in many
    assert failed_job_reason("job failed", []).endswith("no round was charged here")


@pytest.mark.slow
def test_a_job_failing_at_one_node_records_why_the_others_stay_charged(tmp_path: Path) -> None:
    generate("iwamizawa", tmp_path / "data", seed=5, years=[2019])
    spec = load_job_spec(EXAMPLES / "lbw_model.toml")
    spec = spec.model_copy(
        update={
            "rounds": 3,
            "training": spec.training.model_copy(update={"local_epochs": 1}),
            "secure_aggregation": spec.secure_aggregation.model_copy(
                update={"timeout": 600.0, "max_retries": 0}
            ),
        }
    )
    nodes, points = {}, {}
    for name in NODES:
        state, data = tmp_path / "nodes" / name, tmp_path / "data" / name
        init_node(state, name, EXAMPLES / "policies" / f"{name}.toml")
        points[name] = EnforcementPoint(name, state)
        import_consents(points[name], data / "consents.csv")
        nodes[name] = LocalNode(name, data, state)
    clinic_consents = tmp_path / "data" / "women-clinic" / "consents.csv"

    def after(progress: Any) -> None:
        if progress.round == 1:  # every clinic resident withdraws: its cohort is gone
            subjects = pd.read_csv(clinic_consents)["subject"].unique()
            now = datetime.now(UTC).isoformat()
            rows = "".join(f"{s},{now},inactive,deny,,no,,,\n" for s in subjects)
            csv = tmp_path / "withdraw.csv"
            csv.write_text(
                "subject,recorded_at,status,decision,purposes,commercial,domains,"
                "period_start,period_end\n" + rows
            )
            import_consents(points["women-clinic"], csv)

    result = EmbeddedRunner(nodes).run(spec, JOB, list(NODES), after, threading.Event())
    assert result.status == "failed"

    def charged(name: str) -> set[int]:
        return {c.round for c in points[name].budget().charges(JOB)}

    def usage_rounds(name: str) -> set[int]:
        entries = points[name].ledger().entries("job.usage")
        return {e.payload["round"] for e in entries if e.payload["job_id"] == JOB}

    assert charged("women-clinic") == {1} == usage_rounds("women-clinic")
    assert charged("city-hospital") == {1, 2} == usage_rounds("city-hospital")
    for name in NODES:
        assert points[name].budget().reservation(JOB).status == "released"
        (released,) = [
            e.payload
            for e in points[name].ledger().entries("budget.released")
            if e.payload["job_id"] == JOB
        ]
        rounds = ", ".join(map(str, sorted(charged(name))))
        assert released["reason"].startswith("job failed: ")
        assert f"round(s) {rounds} stay charged" in released["reason"]
        assert released["charges"] == len(charged(name))
