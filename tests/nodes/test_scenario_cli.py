"""``hamanasu scenario generate``: the data only, and with ``--sqlite`` a database per holder."""

import subprocess
import sys

import pandas as pd

from federation.cdm import get_schema
from nodes.sources import read_columns


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hamanasu", "scenario", "generate", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generate_writes_files_and_sqlite_databases_that_read_the_same(tmp_path):
    out = tmp_path / "scn"
    proc = _generate("--out", str(out), "--year", "2019", "--sqlite")
    assert proc.returncode == 0, proc.stderr
    holders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert holders == ["city", "city-hospital", "dairy", "drugstore", "insurer", "women-clinic"]
    for holder in holders:
        mapping = out / holder / "mapping.toml"
        assert (out / holder / f"{holder}.db").is_file()
        for table in [p for p in (out / holder).iterdir() if p.suffix in (".csv", ".parquet")]:
            if table.stem == "consents":
                continue
            columns = [c for c in get_schema(table.stem).names if c != "subject"]
            pd.testing.assert_frame_equal(
                read_columns(mapping, table.stem, columns),
                read_columns(out / holder, table.stem, columns),
                check_exact=True,
            )


def test_generate_refuses_an_unknown_preset_in_one_line(tmp_path):
    proc = _generate("--out", str(tmp_path), "--preset", "sapporo")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "sapporo" in proc.stderr


def test_generate_refuses_a_bad_database_choice_in_one_line_before_writing(
    tmp_path, hamanasu_in_process
):
    # The first case runs as a real process, the others through the same entry point in
    # this process (each stops at its bad input; a traceback escaping it fails the test).
    for i, (args, fragment) in enumerate((
        (("--postgres", "sqlite:///x.db"), "is not a postgresql:// URL"),
        (("--postgres", "not a url"), "is not a postgresql:// URL"),
        (("--sqlite", "--postgres", "postgresql://u@h/db"), "choose one"),
        (("--postgres", "postgresql://u@h/db", "--schema-prefix", "Bad-"), "--schema-prefix"),
    )):
        argv = ("--out", str(tmp_path / "x"), "--year", "2019", *args)
        proc = _generate(*argv) if i == 0 else hamanasu_in_process("scenario", "generate", *argv)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert fragment in proc.stderr
        assert not (tmp_path / "x").exists()
