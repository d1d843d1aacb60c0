"""A node that missed a round states the ε it spent, not the job's whole composed ε.

Three nodes run a three-round DP training job on the embedded engine; one refuses the
second round (as a node cut off, or whose consent check fails, would). The job goes on
with the two others. The result's ε for that node is what its gate charged for the two
rounds it ran; the nodes in every round state the job's whole ε, the job's largest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.spec import JobSpec, parse_job_spec
from hamanasu.training_run import run_training_job
from nodes.client_app import RoundUse
from nodes.enforcement import JobRefused
from nodes.sources import NodeSource
from policies.accounting import compose_epsilon

NAMES = ["north", "south", "west"]
MISSES = ("west", 2)  # this node refuses this round

JOB = {
    "kind": "train",
    "features": ["bmi_pre"],
    "label": "lbw",
    "rounds": 3,
    "min_nodes": 2,
    "privacy": {"epsilon": 3.0, "delta": 1e-5},
    "training": {"batch_size": 64, "test_fraction": 0.2},
}


class _BookGate:
    """A gate that keeps a budget of its own: it composes the mechanisms it charged.

    ``keeps_budget`` False answers None from ``commit`` (a gate without a budget), so
    the node composes what it ran itself.
    """

    def __init__(self, name: str, keeps_budget: bool) -> None:
        self.name, self.keeps_budget = name, keeps_budget
        self.charged: dict[int, dict] = {}

    def spent(self, delta: float) -> float:
        """Return the composed ε of the rounds charged here."""
        return compose_epsilon([self.charged[r] for r in sorted(self.charged)], delta)

    def select(self, job: JobSpec, job_id: str, round_no: int, frame: pd.DataFrame) -> pd.DataFrame:
        """Return ``frame``, or refuse the round this node misses."""
        if (self.name, round_no) == MISSES:
            raise JobRefused(self.name, [("cut_off", "the node missed this round")])
        return frame

    def commit(self, job: JobSpec, use: RoundUse) -> float | None:
        """Charge the round; return the job's composed ε here (None without a budget)."""
        assert job.privacy is not None
        self.charged[use.round] = use.mechanism
        return self.spent(job.privacy.delta) if self.keeps_budget else None


def _node(folder: Path, name: str, n: int, seed: int) -> NodeSource:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "subject": [f"{seed:02x}{i:030x}" for i in range(n)],
            "bmi_pre": rng.normal(22, 3, n),
            "lbw": rng.integers(0, 2, n),
        }
    )
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return NodeSource(name, path)


@pytest.mark.parametrize("keeps_budget", [True, False], ids=["gate-budget", "node-composes"])
def test_a_node_that_missed_a_round_states_what_it_spent(
    tmp_path: Path, keeps_budget: bool
) -> None:
    spec = parse_job_spec(JOB)
    nodes = [_node(tmp_path, n, 300, i + 1) for i, n in enumerate(NAMES)]
    gates = {n: _BookGate(n, keeps_budget) for n in NAMES}
    run = run_training_job(spec, nodes, job_id="j1", max_records=300, gates=dict(gates))
    assert run.outcome.status == "succeeded", run.outcome.reason
    report = run.report()
    victim, missed = MISSES
    assert [victim in r["nodes"] for r in report["rounds"] if r["round"] <= 3] == [
        r != missed for r in (1, 2, 3)
    ]
    ran = sorted(gates["north"].charged)  # every round, the final evaluation's included
    assert sorted(gates[victim].charged) == [r for r in ran if r != missed]
    stated = report["privacy"]["epsilon_spent_by_node"]
    delta = JOB["privacy"]["delta"]
    for name, gate in gates.items():
        assert stated[name] == pytest.approx(gate.spent(delta), rel=1e-9), name
    # it ran fewer rounds than the others, each of which spent about the job's ε
    assert stated[victim] < 0.9 * min(stated[n] for n in NAMES if n != victim)
    assert max(stated.values()) <= JOB["privacy"]["epsilon"]
