"""Holder-local views for linked jobs: one row per key, repeated mothers left out."""

import numpy as np
import pandas as pd

from nodes.scenario.linked_views import (
    births_by_mother,
    infant_growth,
    pregnancy_dairy,
    pregnancy_supplements,
    prepregnancy_checkup,
)


def test_views_give_one_row_per_key() -> None:
    births = pd.DataFrame({"subject": ["a", "b", "b", "c"], "lbw": [1, 0, 1, 0]})
    by_mother = births_by_mother(births)
    assert by_mother["subject"].tolist() == ["a", "c"]  # b gave birth twice: left out
    assert by_mother["bw_group"].tolist() == ["lbw", "normal"]
    surveys = pd.DataFrame({"subject": ["a", "a", "c"], "milk_g_day": [100, 200, 50],
                            "other_dairy_g_day": [20, 0, 10]})
    assert pregnancy_dairy(surveys).set_index("subject")["dairy_g"].to_dict() == {
        "a": 160.0, "c": 60.0}
    buys = pd.DataFrame({"subject": ["a", "a", "c"], "category": ["food", "supplements", "food"]})
    assert pregnancy_supplements(buys).set_index("subject")["supplement"].to_dict() == {
        "a": 1.0, "c": 0.0}


def test_infant_growth_is_wide_by_age_with_missed_checkups_missing() -> None:
    rows = [("i1", "m1", 4, 7000, 62.0), ("i1", "m1", 10, 9000, 72.0),
            ("i2", "m2", 4, 6500, 61.0), ("i3", "m3", 4, 6000, 60.0), ("i4", "m3", 4, 6100, 60.5)]
    c = pd.DataFrame(rows, columns=["subject", "mother", "age_months", "weight_g", "length_cm"])
    wide = infant_growth(c).set_index("mother")
    assert list(wide.index) == ["m1", "m2"]  # m3 has two infants: left out
    assert wide.loc["m1", "weight_kg_10m"] == 9.0
    assert np.isnan(wide.loc["m2", "weight_kg_10m"])


def test_prepregnancy_checkup_keeps_women_of_child_bearing_age() -> None:
    c = pd.DataFrame({"subject": ["a", "a", "b", "c"], "female": [1, 1, 0, 1],
                      "age": [29, 30, 30, 55], "sbp": [110, 120, 130, 140],
                      "dbp": [70, 74, 80, 90], "bmi": [21.0, 22.0, 24.0, 25.0]})
    out = prepregnancy_checkup(c).set_index("subject")
    assert list(out.index) == ["a"]  # b is a man, c is 55
    assert out.loc["a", "checkup_sbp_10"] == 11.5
    assert out.loc["a", "checkup_bmi"] == 21.5 and out.loc["a", "checkup_dbp"] == 72.0
