"""``hamanasu scenario generate --postgres``: one schema per holder, and a node mapped on
it gives exactly what the same data as files give (frames and job results).

Needs $HAMANASU_TEST_POSTGRES_URL; each run uses its own schema prefix and drops its
schemas after.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from federation.cdm import get_schema
from federation.spec import parse_job_spec
from hamanasu.analytics_run import run_analytics_job
from nodes.mapping import load_mapping
from nodes.scenario.generator import ScenarioManifest
from nodes.sources import NodeSource, read_columns

URL = os.environ.get("HAMANASU_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="HAMANASU_TEST_POSTGRES_URL is not set (a PostgreSQL to test against)"
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Iterator[tuple[Path, ScenarioManifest, str]]:
    assert URL is not None
    out = tmp_path_factory.mktemp("pg-scenario")
    prefix = f"t{secrets.token_hex(4)}_"
    args = [
        sys.executable,
        "-m",
        "hamanasu",
        "scenario",
        "generate",
        "--out",
        str(out),
        "--year",
        "2019",
        "--scale",
        "0.5",
        "--postgres",
        URL,
        "--schema-prefix",
        prefix,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        manifest = ScenarioManifest.model_validate_json((out / "scenario.json").read_text())
        for node in manifest.nodes:
            assert f"schema {prefix}{node.name.replace('-', '_')} of" in proc.stdout
        yield out, manifest, proc.stdout
    finally:
        engine = sa.create_engine(URL)
        with engine.begin() as conn:
            for name in ("city", "city_hospital", "women_clinic", "insurer", "drugstore", "dairy"):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{prefix}{name}" CASCADE'))
        engine.dispose()


def test_every_holder_and_domain_reads_the_same_from_postgres_as_from_files(scenario):
    out, manifest, _ = scenario
    for node in manifest.nodes:
        mapping = out / node.name / "mapping.toml"
        assert load_mapping(mapping).db_schema is not None
        assert "password" not in mapping.read_text()
        for domain in node.files:
            columns = [c for c in get_schema(domain).names if c != "subject"]
            from_db = read_columns(mapping, domain, columns)
            from_files = read_columns(out / node.name, domain, columns)
            pd.testing.assert_frame_equal(from_db, from_files, check_exact=True)


def _stats(domain: str, variables: list[str], group: str, min_nodes: int) -> object:
    return parse_job_spec(
        {
            "kind": "stats",
            "name": f"{domain}-by-{group}",
            "domain": domain,
            "min_nodes": min_nodes,
        "secure_aggregation": {"enabled": min_nodes > 1},  # SecAgg+ needs two nodes at least
            "stats": {
                "measures": ["count", "mean", "variance"],
                "variables": variables,
                "group_by": [group],
                "levels": {group: [0, 1]},
                "min_cell_count": 10,
            },
        }
    )


@pytest.mark.slow
def test_jobs_on_nodes_mapped_onto_postgres_give_the_files_results(scenario, tmp_path):
    out, _, _ = scenario
    jobs = [
        (
            _stats("births", ["birth_weight_g", "gwg_kg"], "female", 2),
            ["city-hospital", "women-clinic"],
        ),
        (_stats("watching_over", ["alerts"], "female", 1), ["city"]),
    ]
    for spec, holders in jobs:
        results = []
        for kind in ("db", "files"):
            nodes = [
                NodeSource(h, out / h / "mapping.toml" if kind == "db" else out / h)
                for h in holders
            ]
            result = run_analytics_job(
                spec, nodes, job_id=f"pg-{kind}", out=tmp_path / kind, show=False
            )
            assert result["status"] == "succeeded", result.get("reason")
            results.append(result["cells"])
        db, files = results
        assert [c["group"] for c in db] == [c["group"] for c in files]
        for a, b in zip(db, files, strict=True):
            # equal up to SecAgg+'s quantisation, which is not deterministic
            assert a["n"] == pytest.approx(b["n"], abs=1e-3) and a["n"] >= 10
            for name, values in b["variables"].items():
                got = a["variables"][name]
                assert got["mean"] == pytest.approx(values["mean"], rel=1e-6), (spec.name, name)
                assert got["variance"] == pytest.approx(values["variance"], rel=1e-4)
