"""A real multi-round training job, a consent withdrawn mid-job, then the auditor's check.

Two nodes run a DP + SecAgg+ training job on the embedded engine through their gates.
After round 1 a resident of the city hospital withdraws. Each node then writes its
disclosure with ``hamanasu node ledger disclose`` and an auditor runs ``hamanasu audit
usage`` on it (real CLI, subprocesses): every round, including the final evaluation-only
round, has a usage entry whose commitment covers every subject the node read (training
and held-out rows), and the withdrawn resident is used up to round 1 and never after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from federation.spec import load_job_spec
from hamanasu.training_run import run_training_job
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint
from nodes.scenario import generate
from nodes.sources import NodeSource, read_columns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "iwamizawa"
NODES = ("city-hospital", "women-clinic")
JOB = "lbw-audit-1"


def _hamanasu(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hamanasu", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def _withdraw(point: EnforcementPoint, subject: str, folder: Path) -> None:
    csv = folder / "withdrawal.csv"
    csv.write_text(
        "subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end\n"
        f"{subject},{datetime.now(UTC).isoformat()},inactive,deny,,no,,,\n"
    )
    import_consents(point, csv)


def _consenting(point: EnforcementPoint, spec: Any, data: Path) -> list[str]:
    frame = read_columns(data, spec.domain, spec.columns())
    subjects = frame["subject"].astype(str).to_numpy()
    return sorted(set(subjects[point.permitted_subjects(spec, subjects)]))


@pytest.mark.slow
def test_disclose_then_audit_a_real_job_with_a_withdrawal(tmp_path: Path) -> None:
    generate("iwamizawa", tmp_path / "data", seed=5, years=[2019])
    spec = load_job_spec(EXAMPLES / "lbw_model.toml")
    spec = spec.model_copy(  # stages wait long enough for a loaded test machine
        update={
            "rounds": 2,
            "training": spec.training.model_copy(update={"local_epochs": 1}),
            "secure_aggregation": spec.secure_aggregation.model_copy(update={"timeout": 600.0}),
        }
    )
    points, sources = {}, []
    for name in NODES:
        state, data = tmp_path / "nodes" / name, tmp_path / "data" / name
        init_node(state, name, EXAMPLES / "policies" / f"{name}.toml")
        points[name] = EnforcementPoint(name, state)
        import_consents(points[name], data / "consents.csv")
        points[name].accept(spec, JOB, approved=True)
        sources.append(NodeSource(name, data, state))
    hospital = points["city-hospital"]
    before = {n: _consenting(points[n], spec, tmp_path / "data" / n) for n in NODES}
    withdrawn = before["city-hospital"][0]

    def after_round(record: Any) -> None:
        if record.round == 1:
            _withdraw(hospital, withdrawn, tmp_path)

    run = run_training_job(
        spec, sources, job_id=JOB, max_records=2000, gates=dict(points), on_round=after_round
    )
    assert run.outcome.status == "succeeded", run.outcome.reason
    for point in points.values():
        point.release(JOB, "job ended")

    for name, point in points.items():
        state = point.state
        out = tmp_path / f"{name}.disclosure.json"
        wrote = _hamanasu(
            "node", "ledger", "disclose", "--dir", state.root, "--job", JOB, "--out", out
        )
        assert wrote.returncode == 0, wrote.stderr
        rounds = json.loads(out.read_text())["rounds"]
        assert sorted(rounds) == ["1", "2", "3"]  # two training rounds, one evaluation round
        # every consenting subject the node holds was read in round 1, not only the
        # training split
        assert rounds["1"] == before[name]
        audit = _hamanasu(
            "audit", "usage", state.ledger_path, "--job", JOB, "--disclosure", out,
            "--consents", state.consents_path, "--key", state.public_key_path, "--format", "json",
        )  # fmt: skip
        assert audit.returncode == 0, audit.stderr + audit.stdout
        report = json.loads(audit.stdout)
        # (a SecAgg+ round that halted and was retried read, and logged, twice)
        assert report["ok"] and {r["round"] for r in report["rounds"]} == {1, 2, 3}
        assert all(r["n_logged"] == len(rounds[str(r["round"])]) for r in report["rounds"])
        usage = [e for e in point.ledger().entries("job.usage") if e.payload["job_id"] == JOB]
        charged = [
            e for e in point.ledger().entries("budget.charged") if e.payload["job_id"] == JOB
        ]
        # the final evaluation reads and releases noisy histograms: charged like a round
        assert {e.payload["round"] for e in charged} == {1, 2, 3}
        assert any(e.payload["epsilon"] > 0.0 for e in usage if e.payload["round"] == 3)

    hospital_rounds = json.loads((tmp_path / "city-hospital.disclosure.json").read_text())["rounds"]
    assert withdrawn in hospital_rounds["1"]
    assert withdrawn not in hospital_rounds["2"] and withdrawn not in hospital_rounds["3"]

    # The auditor catches a node that hides a subject it used.
    out = tmp_path / "city-hospital.disclosure.json"
    lie = json.loads(out.read_text())
    lie["rounds"]["3"] = lie["rounds"]["3"][1:]
    out.write_text(json.dumps(lie))
    state = hospital.state
    caught = _hamanasu(
        "audit", "usage", state.ledger_path, "--job", JOB, "--disclosure", out,
        "--consents", state.consents_path,
    )  # fmt: skip
    assert caught.returncode == 1 and "round 3" in caught.stderr, caught.stderr
