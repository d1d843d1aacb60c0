"""A node reading a hospital's PostgreSQL database through a mapping file.

Needs $HAMANASU_TEST_POSTGRES_URL; each run uses its own schema and drops it after.
"""

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from federation.cdm import get_schema
from nodes.data_loading import DataValidationError
from nodes.mapping import load_mapping
from nodes.scenario.generator import generate
from nodes.sources import read_columns
from nodes.sql_source import check_mapping, read_engine, read_mapped
from tests.nodes.holder_db import holder_table, write_holder, write_mapping
from tests.nodes.sql_capture import read_capturing_sql

URL = os.environ.get("HAMANASU_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="HAMANASU_TEST_POSTGRES_URL is not set (a PostgreSQL to test against)"
)
ENV = "HAMANASU_TEST_HOSPITAL_DB"


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Iterator[tuple[Path, Path, pd.DataFrame, str, sa.Engine]]:
    """(files folder, mapping file, holder table, schema, a writing engine)."""
    assert URL is not None
    root = tmp_path_factory.mktemp("pg-hospital")
    generate("iwamizawa", root / "scenario", years=[2019])
    files = root / "scenario" / "city-hospital"
    table = holder_table(pd.read_csv(files / "births.csv"))
    schema = f"realdata_{secrets.token_hex(4)}"
    admin = sa.create_engine(URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    write_holder(admin, table, schema=schema)
    os.environ[ENV] = URL
    mapping = write_mapping(root / "mapping.toml", url_env=ENV, schema=schema)
    try:
        yield files, mapping, table, schema, admin
    finally:
        os.environ.pop(ENV, None)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_mapped_postgres_gives_exactly_the_files_frame(hospital):
    files, mapping, *_ = hospital
    columns = [c for c in get_schema("births").names if c != "subject"]
    from_db = read_columns(mapping, "births", columns)
    from_files = read_columns(files, "births", columns)
    pd.testing.assert_frame_equal(from_db, from_files, check_exact=True)


def test_the_postgres_session_is_read_only(hospital):
    _, mapping_file, _, schema, _ = hospital
    mapping = load_mapping(mapping_file)
    engine = read_engine(mapping.database_url(), mapping.timeout_s)
    with engine.connect() as conn, pytest.raises(sa.exc.InternalError, match="read-only"):
        conn.execute(sa.text(f'DELETE FROM "{schema}".deliveries'))
    with engine.connect() as conn, pytest.raises(sa.exc.InternalError, match="read-only"):
        conn.execute(sa.text(f'CREATE TABLE "{schema}".stolen (x int)'))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "30s"
        count = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".deliveries')).scalar()
    assert count == len(hospital[2])


def test_a_job_asks_postgres_only_for_its_columns(hospital):
    _, mapping_file, *_ = hospital
    frame, sent = read_capturing_sql(mapping_file, "births", ["preterm", "smoking"])
    assert list(frame.columns) == ["subject", "preterm", "smoking"]
    reads = [s for s in sent if "deliveries" in s]
    assert any(s.startswith("COPY (SELECT") for s in reads)  # the rows, in bulk
    for select in reads:
        head = select.split("FROM")[0]
        assert {"mother_pid", "ga_days", "smoke_cd"} == {
            c for c in holder_table_columns() if c in head
        }


def holder_table_columns() -> list[str]:
    return [
        "mother_pid",
        "baby_pid",
        "delivered_on",
        "mat_age",
        "birth_order",
        "bmi_before",
        "smoke_cd",
        "alc",
        "hdp_code",
        "weight_gain_g",
        "multi",
        "sex",
        "ga_days",
        "bw_kg",
        "ca_mg",
        "dairy",
        "cancelled",
    ]


def test_postgres_mapping_errors_and_bad_rows_listed_at_once(hospital, tmp_path):
    _, _, table, schema, admin = hospital
    bad = table.copy()
    bad.loc[[2, 5], "sex"] = "U"
    bad.loc[[10, 11, 12], "bw_kg"] = 0.1
    bad_schema = f"{schema}_bad"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{bad_schema}"'))
    try:
        write_holder(admin, bad, schema=bad_schema)
        mapping = load_mapping(write_mapping(tmp_path / "m.toml", url_env=ENV, schema=bad_schema))
        with pytest.raises(DataValidationError) as caught:
            read_mapped(mapping, "births", ["female", "birth_weight_g"])
        found = {(p.column, p.row, p.more) for p in caught.value.problems}
        assert found == {("female", 3, 1), ("birth_weight_g", 11, 2)}
        report = check_mapping(mapping)["births"]
        assert {p.column for p in report.problems} == {"female", "birth_weight_g"}
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{bad_schema}" CASCADE'))


def test_bulk_read_keeps_types_nulls_and_filters(hospital, tmp_path):
    """Rows read in bulk (COPY) carry NULL, empty text, booleans, dates and numerics."""
    _, _, _, schema, admin = hospital
    with admin.begin() as conn:
        conn.execute(
            sa.text(
                f'CREATE TABLE "{schema}".kinds (pid text, bw numeric, smoke boolean, '
                "born date, site varchar(20), keep text)"
            )
        )
        conn.execute(
            sa.text(
                f'INSERT INTO "{schema}".kinds VALUES '
                f"('{'a' * 32}', 3.25, true, '2019-05-01', 'city-hospital', '50% yes'), "
                f"('{'b' * 32}', 2.4, false, '2019-05-02', '', '50% yes'), "
                f"('{'c' * 32}', NULL, NULL, NULL, NULL, '50% yes'), "
                f"('{'d' * 32}', 9, true, '2019-05-03', 'x', 'no')"
            )
        )
    path = tmp_path / "kinds.toml"
    path.write_text(
        f'url_env = "{ENV}"\nschema = "{schema}"\n\n[domains.births]\ntable = "kinds"\n'
        'where = "keep LIKE \'50%\'"\n[domains.births.columns]\nsubject = "pid"\n'
        'birth_weight_g = { from = "bw", convert = "kg->g", round = 0 }\n'
        'smoking = "smoke"\nbirth_date = "born"\nfacility = "site"\n'
    )
    mapping = load_mapping(path)
    with pytest.raises(DataValidationError) as caught:
        read_mapped(mapping, "births", ["birth_weight_g", "smoking", "birth_date", "facility"])
    missing = "missing value in a required column"
    assert [(p.row, p.column, p.reason, p.more) for p in caught.value.problems] == [
        (2, "facility", missing, 1),  # the empty text, and the NULL of row 3
        (3, "birth_weight_g", missing, 0),
        (3, "smoking", missing, 0),
        (3, "birth_date", missing, 0),
    ]
    read = read_mapped(mapping, "births", ["birth_weight_g", "smoking"], raise_problems=False)
    assert read.rows_read == 3 and len(read.problems) == 2
    with admin.begin() as conn:
        conn.execute(sa.text(f"""DELETE FROM "{schema}".kinds WHERE bw IS NULL OR site = ''"""))
    frame = read_mapped(mapping, "births", ["birth_weight_g", "smoking", "birth_date"]).frame
    assert frame["subject"].tolist() == ["a" * 32]
    assert frame["birth_weight_g"].tolist() == [3250] and frame["smoking"].tolist() == [1]
    assert frame["birth_date"].tolist() == [pd.Timestamp("2019-05-01")]


def test_a_bulk_read_past_the_timeout_is_a_database_error(hospital, tmp_path):
    _, _, _, schema, _ = hospital
    path = tmp_path / "slow.toml"
    path.write_text(
        f'url_env = "{ENV}"\nschema = "{schema}"\ntimeout_s = 0.2\n\n[domains.births]\n'
        f"query = 'SELECT mother_pid, pg_sleep(0.05) AS nap FROM \"{schema}\".deliveries'\n"
        '[domains.births.columns]\nsubject = "mother_pid"\n'
    )
    with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
        read_mapped(load_mapping(path), "births", [])
