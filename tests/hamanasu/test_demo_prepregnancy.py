"""The demo's third question: HDP at the hospital on the insurer's pre-pregnancy checkups.

Runs the linked GLM (PSI + MPC) over a generated scenario and checks it against a pooled
statsmodels fit on the inner join of the two holders' views, and that the generator's
relation shows: HDP odds rise with pre-pregnancy systolic pressure.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import statsmodels.api as sm
from rich.console import Console

from hamanasu.demo_linked import Q3_TERMS, answer_prepregnancy_hdp
from nodes.data_loading import load_table
from nodes.scenario import generate
from nodes.scenario import linked_views as views


def test_q3_linked_glm_equals_pooled_fit_and_shows_pressure_effect(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate("iwamizawa", data, seed=2017, years=list(range(2015, 2024)))
    result = answer_prepregnancy_hdp(data, tmp_path, Console(quiet=True))
    assert result["status"] == "succeeded", result.get("reason")
    assert (tmp_path / result["plot"]).stat().st_size > 0

    births = views.births_by_mother(load_table(data / "city-hospital" / "births.csv"))
    checkups = views.prepregnancy_checkup(load_table(data / "insurer" / "checkups.parquet"))
    joined = births[["subject", "hdp", "maternal_age"]].merge(checkups, on="subject")
    assert result["linked_n"] == len(joined) > 500
    pooled = sm.Logit(
        joined["hdp"].astype(float), sm.add_constant(joined[Q3_TERMS].astype(float))
    ).fit(disp=0)
    coefs = result["coefficients"]
    for term in Q3_TERMS:
        assert coefs[term]["estimate"] == pytest.approx(pooled.params[term], abs=1e-6)
        assert coefs[term]["std_error"] == pytest.approx(pooled.bse[term], rel=1e-5)
    assert coefs["checkup_sbp_10"]["odds_ratio"] > 1.0
    assert pd.notna(coefs["checkup_bmi"]["odds_ratio"])
