"""Column-wise checks give the same problems whatever form the values arrive in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nodes.column_checks import value_ids
from nodes.data_loading import DataValidationError, load_table, validate_frame

PSEUDONYM = "0123456789abcdef" * 2


def _births(n: int = 6) -> pd.DataFrame:
    """Return ``n`` valid births rows, typed as a Parquet file would hold them."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "subject": f"{i:032x}",
                "infant": f"{i + 100:032x}",
                "year": 2019,
                "birth_date": f"2019-03-{i + 1:02d}",
                "facility": "city-hospital",
                "maternal_age": 30 + i,
                "parity": 1,
                "bmi_pre": 21.5,
                "smoking": 0,
                "alcohol": 0,
                "hdp": 0,
                "gwg_kg": 10.0,
                "multiple": 0,
                "female": i % 2,
                "gestational_weeks": 39,
                "preterm": 0,
                "birth_weight_g": 3000,
                "lbw": 0,
                "calcium_mg": 500.0,
                "dairy_g_day": 100.0,
            }
        )
    return pd.DataFrame(rows)


def _problems(frame: pd.DataFrame) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(DataValidationError) as info:
        validate_frame("births", frame, "births.parquet")
    return [(p.row, p.column, p.reason) for p in info.value.problems]


def test_typed_columns_load_with_schema_dtypes() -> None:
    out = validate_frame("births", _births(), "births.parquet")
    assert out["maternal_age"].dtype == np.int64 and out["female"].tolist() == [0, 1] * 3
    assert out["bmi_pre"].dtype == np.float64
    assert out["subject"].dtype == "str" and out["subject"].iloc[2] == f"{2:032x}"
    assert out["birth_date"].iloc[0] == pd.Timestamp("2019-03-01")


def test_typed_text_and_mixed_columns_report_the_same_rows() -> None:
    typed = _births()
    typed.loc[1, "maternal_age"] = 99
    typed.loc[2, "smoking"] = 2
    typed.loc[3, "bmi_pre"] = np.nan
    typed.loc[4, "infant"] = "IWA-000000001"
    typed.loc[5, "birth_date"] = "2019-02-30"
    expected = [
        (2, "maternal_age", "value 99 is outside 13..55"),
        (3, "smoking", "value 2 is not 0 or 1"),
        (4, "bmi_pre", "missing value in a required column"),
        (5, "infant", "value 'IWA-000000001' is not a 32-hex-digit pseudonym"),
        (6, "birth_date", "value '2019-02-30' is not an ISO date (YYYY-MM-DD)"),
    ]
    assert _problems(typed) == expected

    text = typed.astype(str).replace({"nan": ""})  # as a CSV holds them
    assert [(r, c) for r, c, _ in _problems(text)] == [(r, c) for r, c, _ in expected]
    assert _problems(text)[1][2] == "value '2' is not 0 or 1"

    mixed = typed.astype(object)  # Python values of more than one type in a column
    for col in ("maternal_age", "smoking", "bmi_pre"):
        mixed.loc[0, col] = str(mixed.loc[0, col])
    mixed.loc[0, "infant"] = f" {typed.loc[0, 'infant']} "  # spacing is trimmed
    assert _problems(mixed) == expected


def test_optional_and_whole_number_columns_keep_nullable_integers() -> None:
    frame = pd.DataFrame(
        {
            "subject": [PSEUDONYM, PSEUDONYM],
            "checkup_date": ["2020-04-01", "2020-05-01"],
            "age_months": [4, 10],
            "female": [True, False],
            "weight_g": np.array([6500, 9000], dtype=np.int32),
            "length_cm": [63.0, 72.0],
            "head_cm": [41.0, 45.0],
            "mother": [PSEUDONYM, PSEUDONYM],
            "feeding": pd.Categorical(["breast", None]),
        }
    )
    out = validate_frame("infant_checkups", frame, "infant_checkups.parquet")
    assert out["female"].tolist() == [1, 0] and out["weight_g"].dtype == np.int64
    assert out["feeding"].isna().tolist() == [False, True]
    frame["weight_g"] = np.array([500, 9000], dtype=np.int32)
    frame.loc[1, "feeding"] = None
    frame["feeding"] = frame["feeding"].astype(object).where(frame.index == 0, "bottle")
    with pytest.raises(DataValidationError) as info:
        validate_frame("infant_checkups", frame, "infant_checkups.parquet")
    assert [(p.row, p.column, p.reason) for p in info.value.problems] == [
        (1, "weight_g", "value 500 is outside 1000..40000"),
        (2, "feeding", "value 'bottle' is not one of breast, mixed, formula"),
    ]


def test_pattern_holds_for_text_outside_ascii() -> None:
    frame = _births(2)
    frame.loc[0, "subject"] = "０" * 32  # full-width digits are not hex digits
    frame.loc[1, "facility"] = "clinic\u00e9"
    assert _problems(frame) == [
        (1, "subject", f"value {'０' * 32!r} is not a 32-hex-digit pseudonym"),
        (2, "facility", "value 'clinic\u00e9' is not matching ^[a-z0-9][a-z0-9-]{0,63}$"),
    ]


def test_repeated_rows_without_a_valid_key_are_still_found() -> None:
    frame = _births(3)
    frame.loc[0, "infant"] = ""
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    problems = _problems(frame)
    assert (4, None, "the row repeats row 1") in problems
    assert (1, "infant", "missing value in a required column") in problems
    assert not [p for p in problems if "repeats the infant" in p[2]]


def test_repeated_key_and_row_are_both_reported_once() -> None:
    frame = _births(4)
    frame = pd.concat([frame, frame.iloc[[1, 1]]], ignore_index=True)
    frame.loc[5, "maternal_age"] = 40  # same infant, another row
    assert _problems(frame) == [
        (5, None, "the row repeats row 2"),
        (5, "infant", "repeats the infant of row 2 (one row per infant)"),
    ]
    with pytest.raises(DataValidationError, match=r"\(and 1 more row in this column\)"):
        validate_frame("births", frame, "births.parquet")


def test_text_column_of_mixed_values_is_checked_as_text() -> None:
    frame = _births(3).astype(object)
    frame.loc[1, "facility"] = 7
    frame.loc[2, "facility"] = 7.5
    with pytest.raises(DataValidationError) as info:
        validate_frame("births", frame, "births.parquet")
    assert [(p.row, p.column, p.reason) for p in info.value.problems] == [
        (3, "facility", "value 7.5 is not matching ^[a-z0-9][a-z0-9-]{0,63}$")
    ]
    frame.loc[2, "facility"] = "clinic"
    out = validate_frame("births", frame, "births.parquet")
    assert out["facility"].tolist() == ["city-hospital", "7", "clinic"]


def test_value_ids_are_equal_exactly_for_equal_values() -> None:
    keys = [f"{i:032x}" for i in range(1000)]
    ids = value_ids(pd.Series([*keys, keys[1], "f" * 32], dtype="str"))
    assert ids[1000] == ids[1] and len(set(ids.tolist())) == 1001
    assert value_ids(pd.Series(keys[:3], dtype="str")).tolist() == [0, 1, 2]
    for values in (
        pd.Series(["ab", None, "ab", None], dtype="str"),
        pd.Series([1.0, np.nan, 1.0, np.nan]),
        pd.Series(["x" * 32, 5, "x" * 32, 5], dtype=object),
        pd.Series(["y" * 8, "z" * 8, "y" * 8, "z" * 8], dtype="str"),
    ):
        ids = value_ids(values)
        assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]


def test_loaded_columns_can_be_changed_in_place(tmp_path) -> None:
    path = tmp_path / "births.parquet"
    _births().to_parquet(path, index=False)
    out = load_table(path)
    for name in ("maternal_age", "bmi_pre", "smoking", "birth_date"):
        out.loc[0, name] = out.loc[1, name]  # not Arrow's read-only memory
        assert out.loc[0, name] == out.loc[1, name]
