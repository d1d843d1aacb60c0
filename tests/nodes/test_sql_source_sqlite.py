"""A node reading a hospital's SQLite database through a mapping file."""

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from federation.cdm import get_schema
from federation.complete_case import CompleteCaseCounts
from nodes.data_loading import DataValidationError
from nodes.mapping import load_mapping
from nodes.scenario.generator import generate
from nodes.sources import read_columns, read_job_columns
from nodes.sql_source import check_mapping, read_engine, read_mapped
from tests.nodes.holder_db import holder_table, write_holder, write_mapping
from tests.nodes.sql_capture import read_capturing_sql


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> tuple[Path, Path, pd.DataFrame]:
    """(files folder, mapping file, the holder's table) of the same births."""
    root = tmp_path_factory.mktemp("hospital")
    generate("iwamizawa", root / "scenario", years=[2019])
    files = root / "scenario" / "city-hospital"
    births = pd.read_csv(files / "births.csv")
    table = holder_table(births)
    engine = sa.create_engine(f"sqlite:///{root / 'hospital.db'}")
    write_holder(engine, table)
    engine.dispose()
    return files, write_mapping(root / "mapping.toml", url="sqlite:///hospital.db"), table


def test_mapped_database_gives_exactly_the_files_frame(hospital):
    files, mapping, _ = hospital
    columns = [c for c in get_schema("births").names if c != "subject"]
    from_db = read_columns(mapping, "births", columns)
    from_files = read_columns(files, "births", columns)
    pd.testing.assert_frame_equal(from_db, from_files, check_exact=True)


def test_a_job_reads_only_its_source_columns(hospital):
    _, mapping_file, _ = hospital
    frame, sent = read_capturing_sql(mapping_file, "births", ["lbw", "bmi_pre"])
    assert list(frame.columns) == ["subject", "lbw", "bmi_pre"]
    (select,) = [s for s in sent if s.lstrip().upper().startswith("SELECT")]
    head = select.split("FROM")[0]
    for needed in ("mother_pid", "bw_kg", "bmi_before"):
        assert needed in head
    for other in ("smoke_cd", "mat_age", "baby_pid", "ca_mg", "delivered_on", "cancelled"):
        assert other not in head
    assert "cancelled = 0" in select and "LIMIT" in select.upper()


def test_the_connection_is_read_only(hospital):
    _, mapping_file, _ = hospital
    mapping = load_mapping(mapping_file)
    engine = read_engine(mapping.database_url(), mapping.timeout_s)
    with engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="readonly"):
        conn.execute(sa.text("DELETE FROM deliveries"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar() > 0


def test_mapping_errors_and_bad_rows_are_all_listed_at_once(hospital, tmp_path):
    _, _, table = hospital
    bad = table.copy()
    bad.loc[[3, 9, 40], "smoke_cd"] = "X"  # an unmapped code, three rows
    bad.loc[[7, 8], "bw_kg"] = 9.5  # 9500 g: out of range, two rows
    bad.loc[12, "delivered_on"] = "2019-13-45"  # not a date in the format
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'bad.db'}")
    write_holder(engine, bad)
    engine.dispose()
    mapping = load_mapping(write_mapping(tmp_path / "m.toml", url="sqlite:///bad.db"))
    with pytest.raises(DataValidationError) as caught:
        read_mapped(mapping, "births", ["smoking", "birth_weight_g", "year"])
    found = {(p.column, p.row, p.more) for p in caught.value.problems}
    assert ("smoking", 4, 2) in found
    assert ("birth_weight_g", 8, 1) in found
    assert ("birth_date", 13, 0) in found
    report = check_mapping(mapping)["births"]
    columns = {p.column for p in report.problems}
    assert {"smoking", "birth_weight_g", "birth_date"} <= columns and report.frame is None


def test_check_lists_every_mapping_fault(hospital, tmp_path):
    text = write_mapping(tmp_path / "m.toml", url="sqlite:///x.db").read_text()
    text = text.replace('calcium_mg = "ca_mg"', 'calcium_mg = "calcium"')
    text = text.replace('dairy_g_day = "dairy"\n', 'dairy_g_day = "dairy"\nshoe_size = "ca_mg"\n')
    text = text.replace('parity = "birth_order"\n', "")
    (tmp_path / "m.toml").write_text(text)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    write_holder(engine, hospital[2])
    engine.dispose()
    problems = check_mapping(load_mapping(tmp_path / "m.toml"))["births"]
    reasons = {(p.column, p.reason) for p in problems}
    assert reasons == {
        ("shoe_size", "not a column of the data model"),
        ("parity", "required column is not mapped"),
        ("calcium_mg", "source column calcium does not exist"),
    }


def test_complete_case_drops_and_counts_incomplete_rows(hospital, tmp_path):
    _, _, table = hospital
    holed = table.copy()
    holed["bmi_before"] = holed["bmi_before"].astype(float)
    holed.loc[[1, 2, 3], "bmi_before"] = None
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'holed.db'}")
    write_holder(engine, holed)
    engine.dispose()
    strict = load_mapping(write_mapping(tmp_path / "a.toml", url="sqlite:///holed.db"))
    with pytest.raises(DataValidationError, match="bmi_pre"):
        read_mapped(strict, "births", ["bmi_pre"])
    loose = load_mapping(
        write_mapping(tmp_path / "b.toml", url="sqlite:///holed.db", complete_case=True)
    )
    read = read_mapped(loose, "births", ["bmi_pre"])
    assert read.dropped_incomplete == 3 and read.missing == {"bmi_pre": 3}
    assert len(read.frame) == read.rows_read - 3 == (table["cancelled"] == 0).sum() - 3
    # what a job's read at the node gives: the mapping's choice, or the job's own
    frame, counts = read_job_columns(tmp_path / "b.toml", "births", ["bmi_pre"])
    assert counts == CompleteCaseCounts(read.rows_read, 3, {"bmi_pre": 3})
    assert len(frame) == read.rows_read - 3
    frame, counts = read_job_columns(tmp_path / "a.toml", "births", ["bmi_pre"], complete_case=True)
    assert counts == CompleteCaseCounts(read.rows_read, 3, {"bmi_pre": 3})
    assert read_job_columns(tmp_path / "a.toml", "births", ["parity"])[1] is None
