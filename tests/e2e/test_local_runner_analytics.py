"""The coordinator's embedded runner runs statistics jobs through every node's gate."""

import threading
from pathlib import Path

import pytest

from federation.spec import load_job_spec
from hamanasu.local_runner import EmbeddedRunner, LocalNode
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint
from nodes.scenario import generate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "iwamizawa"


@pytest.mark.slow
def test_run_stats_job_charges_each_node_once_and_releases(tmp_path):
    generate("iwamizawa", tmp_path / "data", seed=3, years=[2016, 2017, 2018, 2019])
    nodes = {}
    for name in ("city-hospital", "women-clinic"):
        state = tmp_path / "nodes" / name
        init_node(state, name, EXAMPLES / "policies" / f"{name}.toml")
        import_consents(EnforcementPoint(name, state), tmp_path / "data" / name / "consents.csv")
        nodes[name] = LocalNode(name, tmp_path / "data" / name, state)
    spec = load_job_spec(EXAMPLES / "lbw_rate_by_year.toml")
    spec = spec.model_copy(
        update={
            "stats": spec.stats.model_copy(update={"levels": {"year": [2016, 2017, 2018, 2019]}})
        }
    )
    progress = []
    result = EmbeddedRunner(nodes).run(
        spec, "stats-1", list(nodes), progress.append, threading.Event()
    )
    assert result.status == "succeeded", result.reason
    assert result.report["dp"]["mode"] == "distributed"
    assert set(result.epsilon_by_node) == set(nodes)
    # DP noise may push a year's events under the minimum cell count: then that year and
    # a complementary one are suppressed, never more than half of four years.
    released = [c for c in result.report["cells"] if not c.get("suppressed") and not c["margin"]]
    assert len(released) >= 2
    assert result.plot_png and result.plot_png[:4] == b"\x89PNG"
    for name, node in nodes.items():
        point = EnforcementPoint(name, node.state_dir)
        charges = point.budget().charges("stats-1")
        assert len(charges) == 1  # one release, one charge
        assert point.budget().reservation("stats-1").status == "released"
        usage = [
            e for e in point.ledger().entries(kind="job.usage") if e.payload["job_id"] == "stats-1"
        ]
        assert len(usage) == 1 and usage[0].payload["n_subjects"] > 0
