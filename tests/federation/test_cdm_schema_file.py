"""The data model lives in a schema file: a consortium's extra domain works without code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.cdm import DEFAULT_SCHEMA_FILE, SCHEMA_VERSION, SCHEMAS, load_schema_file

HAMANASU = [sys.executable, "-m", "hamanasu"]

EXTRA = """
[domains.walks]
description = "one week of a pedometer programme"
unique = [["subject", "week"]]
columns = [
  { name = "subject", role = "key" },
  { name = "week", kind = "int", role = "meta", low = 1, high = 53 },
  { name = "steps", kind = "int", low = 0, high = 200000, unit = "steps/day" },
  { name = "active", kind = "bool", unit = "1 = met the 8,000 steps goal" },
]
checks = [{ rule = "flag_below", column = "active", of = "steps", threshold = 8000 }]
"""


def test_packaged_schema_file_is_the_one_in_force():
    loaded = load_schema_file(DEFAULT_SCHEMA_FILE)
    assert loaded.version == SCHEMA_VERSION
    assert set(loaded.domains) == set(SCHEMAS)
    births = loaded.domains["births"]
    assert births.column("birth_weight_g").unit == "g"
    assert births.column("infant").role == "key"
    assert [c.reason for c in births.checks][
        0
    ] == "lbw must be 1 exactly when birth_weight_g < 2500"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('version = 1\n[domains.x]\ncolumns = [{ name = "a" }]', "column a has no kind"),
        (
            'version = 1\n[domains.x]\ncolumns = [{ name = "a", kind = "int", colour = 1 }]',
            "colour",
        ),
        (
            'version = 1\n[domains.x]\ncolumns = [{ name = "a", kind = "int" }]\n'
            'checks = [{ rule = "magic", column = "a" }]',
            "unknown rule 'magic'",
        ),
        ('[domains.x]\ncolumns = [{ name = "a", kind = "int" }]', "integer version"),
        ("version = 1", "at least one"),
    ],
)
def test_a_malformed_schema_file_is_refused_naming_the_fault(tmp_path, body, fragment):
    path = tmp_path / "schema.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        load_schema_file(path)


def _walks(folder: Path, seed: int, n: int) -> Path:
    rng = np.random.default_rng(seed)
    steps = rng.integers(2000, 14000, n)
    frame = pd.DataFrame(
        {
            "subject": [f"{seed:08x}{i:024x}" for i in range(n)],
            "week": rng.integers(1, 53, n),
            "steps": steps,
            "active": (steps < 8000).astype(int),
        }
    )
    folder.mkdir()
    frame.to_csv(folder / "walks.csv", index=False)
    return folder


@pytest.mark.slow
def test_an_extra_domain_in_a_schema_file_runs_through_simulate(tmp_path):
    schema = tmp_path / "consortium_schema.toml"
    schema.write_text(DEFAULT_SCHEMA_FILE.read_text() + EXTRA)
    nodes = {
        name: _walks(tmp_path / name, seed, n) for name, seed, n in (("a", 1, 300), ("b", 2, 400))
    }
    job = tmp_path / "walks.toml"
    job.write_text(
        'kind = "stats"\ndomain = "walks"\nmin_nodes = 2\n[stats]\nmeasures = ["count", "mean"]\n'
        'variables = ["steps"]\nbounds = { steps = [0, 200000] }\nmin_cell_count = 10\n'
    )
    env = {**os.environ, "HAMANASU_CDM_SCHEMA": str(schema)}
    args = [*HAMANASU, "simulate", str(job), "--out", str(tmp_path / "out"), "--quiet"]
    for name, folder in nodes.items():
        args += ["--node", f"{name}={folder}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    pooled = pd.concat(pd.read_csv(f / "walks.csv") for f in nodes.values())
    total = result["cells"][0]
    assert total["n"] == pytest.approx(len(pooled), abs=1e-3)
    # through SecAgg+'s quantisation: equal to the pooled mean within 1e-6 relative
    assert total["variables"]["steps"]["mean"] == pytest.approx(pooled["steps"].mean(), rel=1e-6)

    # The same folders without the schema file: the domain is unknown.
    env.pop("HAMANASU_CDM_SCHEMA")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "walks" in proc.stderr
