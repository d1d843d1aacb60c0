"""``hamanasu node map check`` and ``hamanasu node pseudonymise``."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from nodes.scenario.pseudonyms import pseudonymize
from tests.nodes.holder_db import holder_table, write_holder, write_mapping

KEY = b"k" * 8 + b"0123456789abcdef-consortium"


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hamanasu", "node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def holder(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    from nodes.scenario.generator import generate

    root = tmp_path_factory.mktemp("holder")
    generate("iwamizawa", root / "scn", years=[2019])
    return root, holder_table(pd.read_csv(root / "scn" / "city-hospital" / "births.csv"))


def _db(path: Path, table: pd.DataFrame) -> None:
    engine = sa.create_engine(f"sqlite:///{path}")
    write_holder(engine, table)
    engine.dispose()


def test_map_check_passes_a_clean_mapping_through_the_node_config(holder, tmp_path):
    _, table = holder
    _db(tmp_path / "h.db", table)
    write_mapping(tmp_path / "mapping.toml", url="sqlite:///h.db")
    (tmp_path / "node.toml").write_text(
        '[node]\nname = "city-hospital"\ncoordinator_url = "http://127.0.0.1:8000"\n'
        'state_dir = "state"\ndata_dir = "mapping.toml"\n'
    )
    proc = _run("map", "check", "--config", str(tmp_path / "node.toml"))
    assert proc.returncode == 0, proc.stderr
    kept = int((table["cancelled"] == 0).sum())
    assert proc.stdout.strip() == f"births: {kept} rows read: ok"


def test_map_check_lists_every_problem_counted(holder, tmp_path):
    _, table = holder
    bad = table.copy()
    bad.loc[[0, 4], "sex"] = "?"
    bad.loc[[6], "mat_age"] = 99
    _db(tmp_path / "h.db", bad)
    write_mapping(tmp_path / "mapping.toml", url="sqlite:///h.db")
    proc = _run("map", "check", "--config", str(tmp_path / "mapping.toml"))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("2 problem(s)")
    assert any("column female" in ln and "'?'" in ln and "and 1 more row" in ln for ln in lines)
    assert any("row 7, column maternal_age" in ln and "13..55" in ln for ln in lines)


def test_map_check_refuses_a_config_without_a_mapping(tmp_path):
    (tmp_path / "node.toml").write_text(
        '[node]\nname = "a"\ncoordinator_url = "http://127.0.0.1:1"\nstate_dir = "s"\n'
    )
    proc = _run("map", "check", "--config", str(tmp_path / "node.toml"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "names no mapping file" in proc.stderr


def _key(folder: Path) -> None:
    (folder / "key.bin").write_bytes(KEY)
    proc = _run(
        "pseudonymise", "key", "--dir", str(folder / "state"), "--from", str(folder / "key.bin")
    )
    assert proc.returncode == 0, proc.stderr
    assert KEY.decode() not in proc.stdout + proc.stderr


def test_pseudonymise_a_file_with_the_key_file_0600(tmp_path):
    _key(tmp_path)
    key_file = tmp_path / "state" / "consortium.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pd.DataFrame({"patient_no": ["A-1", "B-2"], "x": [1, 2]}).to_csv(
        tmp_path / "in.csv", index=False
    )
    args = ["pseudonymise", "file", "--dir", str(tmp_path / "state"), "--column", "patient_no"]
    proc = _run(*args, str(tmp_path / "in.csv"), str(tmp_path / "out.csv"))
    assert proc.returncode == 0, proc.stderr
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert list(out.columns) == ["subject", "x"]
    assert out["subject"].tolist() == [pseudonymize("A-1", KEY), pseudonymize("B-2", KEY)]
    assert KEY.decode() not in proc.stdout + proc.stderr

    key_file.chmod(0o644)  # a key others can read is refused, and the message holds no key
    proc = _run(*args, str(tmp_path / "in.csv"), str(tmp_path / "out2.csv"))
    assert proc.returncode == 2 and "chmod 600" in proc.stderr
    assert KEY.decode() not in proc.stderr and not (tmp_path / "out2.csv").exists()


def test_pseudonymise_a_database_into_a_view_the_mapping_reads(tmp_path):
    _key(tmp_path)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'h.db'}")
    pd.DataFrame({"pid": [101, 102, 103], "bw": [3.1, 2.4, 2.9]}).to_sql(
        "babies", engine, index=False
    )
    proc = _run(
        "pseudonymise",
        "db",
        "--dir",
        str(tmp_path / "state"),
        "--url-env",
        "HOLDER_DB",
        "--table",
        "babies",
        "--column",
        "pid",
        env={"HOLDER_DB": f"sqlite:///{tmp_path / 'h.db'}"},
    )
    assert proc.returncode == 0, proc.stderr
    view = pd.read_sql("SELECT subject, bw FROM babies_pseudonymised ORDER BY bw", engine)
    assert view["subject"].tolist() == [pseudonymize(p, KEY) for p in ("102", "103", "101")]
    keys = pd.read_sql("SELECT * FROM babies_pseudonyms", engine)
    assert KEY.hex() not in keys.to_csv() and KEY.decode() not in keys.to_csv()
