"""A mapping's codes and date formats, applied to a column of any type."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nodes.mapping import ColumnMap


def _apply(cmap: ColumnMap, values: pd.Series) -> tuple[list[object], list[tuple[int, str, int]]]:
    problems: list[tuple[int, str, int]] = []
    out = cmap.apply(values, problems)
    return [None if pd.isna(v) else v for v in out], problems


def test_codes_map_text_and_numbers_and_list_unknown_codes_once() -> None:
    smoking = ColumnMap.model_validate({"from": "s", "codes": {"N": 0, "Y": 1, "EX": 0}})
    text = pd.Series([" Y", "N", None, "EX", "??", "Y", "??"], dtype="str")
    assert _apply(smoking, text) == (
        [1, 0, None, 0, None, 1, None],
        [(4, "code '??' has no mapping (mapped: EX, N, Y)", 2)],
    )
    sex = ColumnMap.model_validate({"from": "s", "codes": {"1": 0, "2": 1}})
    assert _apply(sex, pd.Series([1.0, 2.0, np.nan, 3.0])) == (
        [0, 1, None, None],
        [(3, "code '3' has no mapping (mapped: 1, 2)", 1)],
    )
    # Python objects are read one by one: True is not the code 1
    assert _apply(sex, pd.Series([1, True, "2"], dtype=object)) == (
        [0, None, 1],
        [(1, "code 'True' has no mapping (mapped: 1, 2)", 1)],
    )


def test_date_formats_read_text_and_numbers_as_days() -> None:
    born = ColumnMap.model_validate({"from": "d", "date_format": "%Y%m%d"})
    values = pd.Series([20190501, 20190230, None, 20190501], dtype="Int64")
    out, problems = _apply(born, values)
    assert out == [pd.Timestamp("2019-05-01"), None, None, pd.Timestamp("2019-05-01")]
    assert problems == [(1, "'20190230' is not a date in the format %Y%m%d", 1)]
    stamped = ColumnMap.model_validate({"from": "d", "date_format": "%Y-%m-%d %H:%M"})
    out, problems = _apply(stamped, pd.Series(["2019-05-01 23:59", "2019-05-02 00:01"]))
    assert out == [pd.Timestamp("2019-05-01"), pd.Timestamp("2019-05-02")] and not problems
