"""Validation on load: every bad-file case names file, row (and CSV line) and column."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.cdm import DOMAINS, SCHEMAS, feature_columns, get_schema
from nodes.data_loading import DataValidationError, load_any, load_table, validate_frame
from nodes.scenario import generate


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenario")
    generate("iwamizawa", out, seed=5, years=[2019, 2020], scale=0.1)
    return out


@pytest.fixture()
def births_text(scenario: Path) -> list[str]:
    return (scenario / "city-hospital" / "births.csv").read_text().splitlines()


def _set_cell(lines: list[str], data_row: int, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    out = list(lines)
    cells = out[data_row].split(",")  # data row k is line k + 1, list index k
    cells[header.index(column)] = value
    out[data_row] = ",".join(cells)
    return out


def _write(tmp_path: Path, lines: list[str], name: str = "births.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _raises(path: Path, expected: str, domain: str | None = None) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_table(path, domain)
    assert str(info.value) == expected
    return info.value


def test_every_generated_file_loads_with_schema_dtypes(scenario: Path) -> None:
    for folder in sorted(p for p in scenario.iterdir() if p.is_dir()):
        for path in folder.iterdir():
            if path.stem in DOMAINS:
                frame = load_table(path)
                assert list(frame.columns) == list(get_schema(path.stem).names)
                assert len(frame) > 0
    births = load_table(scenario / "women-clinic" / "births.csv")
    assert births["birth_weight_g"].dtype == np.int64
    assert births["lbw"].dtype == np.int64
    assert births["bmi_pre"].dtype == np.float64
    assert pd.api.types.is_datetime64_any_dtype(births["birth_date"])
    assert ((births["birth_weight_g"] < 2500) == (births["lbw"] == 1)).all()


def test_out_of_range_value_names_file_row_line_and_column(
    births_text: list[str], tmp_path: Path
) -> None:
    path = _write(tmp_path, _set_cell(births_text, 17, "birth_weight_g", "-5"))
    err = _raises(
        path, "births.csv row 17 (line 18), column birth_weight_g: value -5 is outside 300..6000"
    )
    assert (err.source, err.row, err.line, err.column) == ("births.csv", 17, 18, "birth_weight_g")
    assert isinstance(err, ValueError)


def test_missing_column_is_refused(births_text: list[str], tmp_path: Path) -> None:
    header = births_text[0].split(",")
    drop = header.index("hdp")
    lines = [
        ",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in births_text
    ]
    _raises(
        _write(tmp_path, lines),
        "births.csv line 1, column hdp: required column is missing (a bool column)",
    )


def test_wrong_type_is_refused(births_text: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, _set_cell(births_text, 3, "maternal_age", "thirty"))
    _raises(path, "births.csv row 3 (line 4), column maternal_age: value 'thirty' is not a number")


def test_fraction_in_integer_column_is_refused(births_text: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, _set_cell(births_text, 2, "parity", "1.5"))
    _raises(path, "births.csv row 2 (line 3), column parity: value '1.5' is not an integer")


def test_missing_value_in_required_column_is_refused(
    births_text: list[str], tmp_path: Path
) -> None:
    for blank in ("", "NaN"):
        path = _write(tmp_path, _set_cell(births_text, 9, "bmi_pre", blank))
        expected = (
            "births.csv row 9 (line 10), column bmi_pre: missing value in a required column"
            if blank == ""
            else "births.csv row 9 (line 10), column bmi_pre: value 'NaN' is not a number"
        )
        _raises(path, expected)


def test_nan_in_parquet_reports_row_without_line(scenario: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(scenario / "city-hospital" / "births.csv")
    frame.loc[4, "gwg_kg"] = np.nan
    path = tmp_path / "births.parquet"
    frame.to_parquet(path, index=False)
    err = _raises(path, "births.parquet row 5, column gwg_kg: missing value in a required column")
    assert err.line is None


def test_bool_column_refuses_other_codes(births_text: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, _set_cell(births_text, 6, "smoking", "2"))
    _raises(path, "births.csv row 6 (line 7), column smoking: value '2' is not 0 or 1")


def test_unknown_category_is_refused(scenario: Path, tmp_path: Path) -> None:
    lines = (scenario / "city" / "infant_checkups.csv").read_text().splitlines()
    path = _write(tmp_path, _set_cell(lines, 4, "feeding", "bottle"), "infant_checkups.csv")
    _raises(
        path,
        "infant_checkups.csv row 4 (line 5), column feeding: "
        "value 'bottle' is not one of breast, mixed, formula",
    )


def test_raw_id_in_key_column_is_refused(births_text: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, _set_cell(births_text, 1, "subject", "IWA-000000001"))
    _raises(
        path,
        "births.csv row 1 (line 2), column subject: "
        "value 'IWA-000000001' is not a 32-hex-digit pseudonym",
    )


def test_column_outside_schema_is_refused(births_text: list[str], tmp_path: Path) -> None:
    lines = [births_text[0] + ",name"] + [line + ",Sato Hanako" for line in births_text[1:]]
    err = _raises(
        _write(tmp_path, lines),
        "births.csv line 1, column name: not a column of the "
        f"births schema (allowed: {', '.join(SCHEMAS['births'].names)})",
    )
    assert err.row is None


def test_bad_date_is_refused(births_text: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, _set_cell(births_text, 8, "birth_date", "2019-02-30"))
    _raises(
        path,
        "births.csv row 8 (line 9), column birth_date: "
        "value '2019-02-30' is not an ISO date (YYYY-MM-DD)",
    )


def test_lbw_disagreeing_with_weight_is_refused(births_text: list[str], tmp_path: Path) -> None:
    header = births_text[0].split(",")
    row = next(
        i
        for i in range(1, len(births_text))
        if births_text[i].split(",")[header.index("lbw")] == "0"
    )
    path = _write(tmp_path, _set_cell(births_text, row, "lbw", "1"))
    err = _raises_any(path)
    assert err.row == row and err.column == "lbw"
    assert "lbw must be 1 exactly when birth_weight_g < 2500" in str(err)


def _raises_any(path: Path) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_table(path)
    return info.value


def test_first_problem_by_row_is_reported(births_text: list[str], tmp_path: Path) -> None:
    lines = _set_cell(births_text, 12, "maternal_age", "99")
    lines = _set_cell(lines, 5, "dairy_g_day", "-1")
    err = _raises_any(_write(tmp_path, lines))
    assert (err.row, err.column) == (5, "dairy_g_day")


def test_unknown_domain_and_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    path.write_text("subject\n")
    with pytest.raises(DataValidationError, match=r"^visits.csv: unknown domain 'visits'"):
        load_table(path)
    bad = tmp_path / "births.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataValidationError, match=r"^births.parquet: not a readable parquet"):
        load_table(bad)
    with pytest.raises(DataValidationError, match="file not found"):
        load_table(tmp_path / "births.csv")


def test_validate_frame_accepts_typed_frames_and_fills_optional_columns() -> None:
    frame = pd.DataFrame(
        {
            "subject": ["0" * 32],
            "survey_date": [pd.Timestamp("2020-05-01")],
            "milk_g_day": [120.0],
            "other_dairy_g_day": [15.0],
        }
    )
    out = validate_frame("dairy_intake", frame, "dairy.parquet")
    assert list(out.columns) == list(SCHEMAS["dairy_intake"].names)
    assert out["bifidobacteria_pct"].isna().all()
    frame.loc[0, "milk_g_day"] = float("inf")
    with pytest.raises(
        DataValidationError,
        match=r"^dairy.parquet row 1, column milk_g_day: "
        r"value inf is not finite",
    ):
        validate_frame("dairy_intake", frame, "dairy.parquet")


def test_keys_and_meta_are_not_features() -> None:
    assert "subject" not in feature_columns("births")
    assert "infant" not in feature_columns("births")
    assert "facility" not in feature_columns("births")
    assert {"bmi_pre", "hdp", "lbw", "birth_weight_g"} <= set(feature_columns("births"))
    for schema in SCHEMAS.values():
        assert schema.column("subject").role == "key"
        assert not [c for c in schema.columns if c.role in ("identifier", "free_text")]


def test_load_any_checks_required_columns(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("x,y,label,note\n1,2.5,0,a\n3,4,1,b\n")
    frame = load_any(path, ["x", "y", "label"])
    assert frame["y"].dtype == np.float64 and frame["y"].tolist() == [2.5, 4.0]
    with pytest.raises(DataValidationError, match=r"^mine.csv line 1, column z: required column"):
        load_any(path, ["x", "z"])
    path.write_text("x,y\n1,2\n3,\n")
    with pytest.raises(
        DataValidationError, match=re.escape("mine.csv row 2 (line 3), column y: missing value")
    ):
        load_any(path, ["x", "y"])
    path.write_text("x,y\n1,2\nfoo,3\n")
    with pytest.raises(
        DataValidationError,
        match=re.escape("mine.csv row 2 (line 3), column x: value 'foo' is not a"),
    ):
        load_any(path, ["x", "y"])


def test_every_problem_is_listed_with_rows_counted(births_text: list[str], tmp_path: Path) -> None:
    lines = _set_cell(births_text, 12, "maternal_age", "99")
    lines = _set_cell(lines, 5, "dairy_g_day", "-1")
    lines = _set_cell(lines, 7, "dairy_g_day", "-2")
    lines = _set_cell(lines, 9, "smoking", "2")
    err = _raises_any(_write(tmp_path, lines))
    assert [(p.row, p.column) for p in err.problems] == [
        (5, "dairy_g_day"),
        (9, "smoking"),
        (12, "maternal_age"),
    ]
    assert str(err) == (
        "births.csv: 3 problems: "
        "row 5 (line 6), column dairy_g_day: value -1 is outside 0..2000 "
        "(and 1 more row in this column); "
        "row 9 (line 10), column smoking: value '2' is not 0 or 1; "
        "row 12 (line 13), column maternal_age: value 99 is outside 13..55"
    )
    assert "\n" not in str(err)


def test_problems_past_the_listed_limit_are_counted() -> None:
    from nodes.data_loading import MAX_LISTED, Problem

    problems = [Problem("bad", row=r, column="c", line=r + 1) for r in range(1, MAX_LISTED + 4)]
    err = DataValidationError("f.csv", problems=problems)
    text = str(err)
    assert text.startswith(f"f.csv: {MAX_LISTED + 3} problems: row 1 (line 2), column c: bad; ")
    assert f"row {MAX_LISTED} (line {MAX_LISTED + 1}), column c: bad; and 3 more problems" in text
    assert text.endswith("and 3 more problems") and (err.row, err.line) == (1, 2)


def test_duplicate_rows_and_keys_are_refused(
    scenario: Path, births_text: list[str], tmp_path: Path
) -> None:
    lines = [*births_text, births_text[4]]
    err = _raises_any(_write(tmp_path, lines))
    last = len(lines) - 1
    assert [(p.row, p.column) for p in err.problems] == [(last, None), (last, "infant")]
    assert f"row {last} (line {last + 1}): the row repeats row 4" in str(err)
    assert "column infant: repeats the infant of row 4 (one row per infant)" in str(err)

    # the same infant twice, other columns differing: a duplicate pseudonym, not a twin
    header = births_text[0].split(",")
    twin = births_text[6].split(",")
    for spacing in ("", " "):
        twin[header.index("infant")] = births_text[2].split(",")[header.index("infant")] + spacing
        err = _raises_any(_write(tmp_path, [*births_text, ",".join(twin)]))
        assert [(p.row, p.column) for p in err.problems] == [(len(births_text), "infant")]

    checkups = (scenario / "city" / "checkups.csv").read_text().splitlines()
    again = checkups[3].split(",")
    again[checkups[0].split(",").index("age")] = "70"
    with pytest.raises(DataValidationError, match="repeats the subject and checkup_date of row 3"):
        load_table(_write(tmp_path, [*checkups, ",".join(again)], "checkups.csv"))


def test_purchase_lines_may_repeat(tmp_path: Path) -> None:
    row = ["0" * 32, "2020-05-01", "food", "1", "300"]
    frame = pd.DataFrame([row, row], columns=list(SCHEMAS["purchases"].names))
    assert len(validate_frame("purchases", frame, "purchases.parquet")) == 2


def test_load_any_keeps_declared_ranges_and_bounds_undeclared_columns(tmp_path: Path) -> None:
    path = tmp_path / "sample.csv"
    path.write_text("bmi_pre,a,y\n22.5,1,0\n99,2,1\n23,1e308,0\n24,3,1\n")
    with pytest.raises(DataValidationError) as info:
        load_any(path, ["bmi_pre", "a", "y"], "births")
    assert str(info.value) == (
        "sample.csv: 2 problems: "
        "row 2 (line 3), column bmi_pre: value 99 is outside 12..50; "
        "row 3 (line 4), column a: value 1e308 is outside -1000000000000..1000000000000"
    )
    # without the domain, the declared range does not apply; the magnitude bound does
    with pytest.raises(DataValidationError, match=r"^sample.csv row 3 \(line 4\), column a: "):
        load_any(path, ["bmi_pre", "a", "y"])
    path.write_text("subject,a,y\n" + f"{'1' * 32},1,0\n{'2' * 32},2,1\n{'1' * 32},1,0\n")
    with pytest.raises(DataValidationError, match=r"row 3 \(line 4\): the row repeats row 1"):
        load_any(path, ["a", "y"], "births")
    path.write_text("a,y\n")
    with pytest.raises(DataValidationError, match="^sample.csv: the file holds no data rows$"):
        load_any(path, ["a", "y"])


def test_unreadable_files_give_one_line(tmp_path: Path) -> None:
    from nodes.data_loading import read_header

    empty = tmp_path / "births.csv"
    empty.write_text("")
    frame = pd.DataFrame({"a": np.arange(50.0), "y": np.arange(50) % 2})
    good = tmp_path / "good.parquet"
    frame.to_parquet(good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    lying = tmp_path / "lying.parquet"
    lying.write_bytes(b"a,y\n1,0\n")
    for path in (empty, cut, lying):
        for read in (read_header, lambda p: load_any(p, ["a"])):
            with pytest.raises(DataValidationError) as info:
                read(path)
            assert str(info.value).startswith(f"{path.name}: not a readable ")
            assert "\n" not in str(info.value)
