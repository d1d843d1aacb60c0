"""The scenario generator against docs/calibration.md, plus determinism and pseudonym linkage.

Tolerances: marginals within the stated absolute bands (a few SE at the sample sizes
used); adjusted log odds ratios within 3 standard errors of the calibration value on a
two-year Hokkaido sample (~64,000 births), with the SE small enough (<= 0.12 on the log
scale, i.e. about +-30 % on the OR) that the test has power.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from consent.csv_io import CSV_COLUMNS
from nodes.data_loading import load_table
from nodes.scenario import (
    LbwModel,
    build_births,
    derive_scenario_key,
    generate,
    pseudonymize,
)
from nodes.scenario import calibration as cal
from nodes.scenario.births import draw_deliveries, expand_newborns, lbw_design


@pytest.fixture(scope="module")
def hokkaido() -> pd.DataFrame:
    return build_births("hokkaido", seed=11, years=[2018, 2019])


@pytest.fixture(scope="module")
def iwamizawa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("iwamizawa")
    generate("iwamizawa", out, seed=2017)
    return out


def _share(mask: pd.Series | np.ndarray) -> float:
    return float(np.mean(mask))


def test_birth_marginals_follow_calibration(hokkaido: pd.DataFrame) -> None:
    b = hokkaido
    assert len(b) > 60_000
    assert abs(b["lbw"].mean() - cal.HOKKAIDO_LBW_RATE) < 0.005
    assert 0.04 <= b["smoking"].mean() <= 0.06
    assert 0.013 <= b["alcohol"].mean() <= 0.028
    assert 0.019 <= b["hdp"].mean() <= 0.035
    assert 0.018 <= b["multiple"].mean() <= 0.026  # ~2 % of newborns
    assert 0.052 <= b["preterm"].mean() <= 0.062
    assert 0.042 <= b.loc[b["multiple"] == 0, "preterm"].mean() <= 0.052
    assert 0.42 <= b.loc[b["multiple"] == 1, "preterm"].mean() <= 0.58
    assert 0.005 <= _share(b["birth_weight_g"] < 1500) <= 0.0095
    boys, girls = b[b["female"] == 0], b[b["female"] == 1]
    assert abs(boys["birth_weight_g"].mean() - 3040) < 30
    assert abs(girls["birth_weight_g"].mean() - 2960) < 30
    assert 415 <= b["birth_weight_g"].std() <= 500
    assert girls["lbw"].mean() > boys["lbw"].mean()
    for low, high, share in cal.AGE_BANDS:
        assert abs(_share((b["maternal_age"] >= low) & (b["maternal_age"] < high)) - share) < 0.01
    for order, share in enumerate(cal.BIRTH_ORDER[:3], start=1):
        assert abs(_share(b["parity"] == order) - share) < 0.01
    assert abs(_share(b["parity"] >= 4) - cal.BIRTH_ORDER[3]) < 0.006
    for low, high, share in cal.BMI_BANDS:
        assert abs(_share((b["bmi_pre"] >= low) & (b["bmi_pre"] < high)) - share) < 0.008
    assert abs(b["calcium_mg"].median() - 430) < 20
    assert 100 <= b["dairy_g_day"].mean() <= 140
    # Multiple births are about 20 % of all LBW; 40+ mothers have raw LBW near 13 %.
    assert 0.16 <= b.loc[b["lbw"] == 1, "multiple"].mean() <= 0.24
    assert 0.11 <= b.loc[b["maternal_age"] >= 40, "lbw"].mean() <= 0.16


def test_adjusted_odds_ratios_recovered_by_logistic_regression(hokkaido: pd.DataFrame) -> None:
    design = lbw_design(hokkaido)
    design["year_2019"] = (hokkaido["year"] == 2019).astype(float)
    fit = sm.Logit(hokkaido["lbw"].to_numpy(), sm.add_constant(design)).fit(disp=0)
    published = [
        "bmi_lt17",
        "bmi_17_18",
        "bmi_185_199",
        "hdp",
        "smoking",
        "female",
        "gwg_kg",
        "dairy_100g",
        "age_ge40",
    ]
    for term, truth in cal.LBW_LOG_ODDS_RATIOS.items():
        est, se = fit.params[term], fit.bse[term]
        assert abs(est - truth) <= 3 * se, (term, math.exp(est), math.exp(truth), se)
        if term in published:
            assert se <= 0.12, (term, se)
    assert math.exp(fit.params["hdp"]) == pytest.approx(3.57, rel=0.3)
    assert math.exp(fit.params["bmi_lt17"]) == pytest.approx(2.55, rel=0.3)
    assert math.exp(fit.params["gwg_kg"]) == pytest.approx(0.86, abs=0.02)


def test_iwamizawa_lbw_targets_hold_in_expectation() -> None:
    model = LbwModel.calibrated(cal.IWAMIZAWA_LBW_TARGETS)
    rng = np.random.default_rng(99)
    fresh = expand_newborns(draw_deliveries(rng, 100_000), rng)
    for year, target in cal.IWAMIZAWA_LBW_TARGETS.items():
        assert model.expected_rate(year) == pytest.approx(target, abs=1e-9)
        assert model.expected_rate(year, fresh) == pytest.approx(target, abs=0.003)
    assert (
        cal.IWAMIZAWA_LBW_TARGETS[2015],
        cal.IWAMIZAWA_LBW_TARGETS[2017],
        cal.IWAMIZAWA_LBW_TARGETS[2019],
    ) == (0.104, 0.078, 0.063)


def test_iwamizawa_observed_rates_vary_like_420_births() -> None:
    seeds = range(10)
    rates = {y: [] for y in (2015, 2017, 2019)}
    sizes = []
    for seed in seeds:
        b = build_births("iwamizawa", seed=seed, years=[2015, 2017, 2019])
        for year in rates:
            rows = b[b["year"] == year]
            rates[year].append(rows["lbw"].mean())
            sizes.append(len(rows))
    assert 380 <= np.mean(sizes) <= 450
    for year, observed in rates.items():
        target = cal.IWAMIZAWA_LBW_TARGETS[year]
        se = math.sqrt(target * (1 - target) / 420)
        assert abs(np.mean(observed) - target) <= 3 * se / math.sqrt(len(observed))
        assert len(set(observed)) == len(observed)  # sampling noise, not forced rates
    spread = np.std(rates[2015] + [r + 0.026 for r in rates[2017]], ddof=1)
    assert 0.007 <= spread <= 0.022  # SE ~1.4 points


def _mothers(root: Path) -> set[str]:
    return set(
        pd.concat(
            [load_table(root / h / "births.csv")["subject"] for h in ("city-hospital", "women-clinic")]
        )
    )


def test_checkup_purchase_and_dairy_marginals(iwamizawa: Path) -> None:
    checkups = pd.concat(
        [
            load_table(iwamizawa / "city" / "checkups.parquet"),
            load_table(iwamizawa / "insurer" / "checkups.parquet"),
        ]
    )
    checkups = checkups[~checkups["subject"].isin(_mothers(iwamizawa))]  # pre-pregnancy ones
    assert checkups["age"].between(40, 74).all()
    assert abs(checkups["bmi"].mean() - 23.1) < 0.6
    assert abs(checkups["bmi"].std() - 3.6) < 0.6
    assert abs(checkups["glucose"].mean() - 99.7) < 4
    assert abs(checkups["ldl"].mean() - 127.2) < 4
    assert abs(checkups["ldl"].std() - 30.2) < 4
    assert abs(checkups["smoking"].mean() - 0.144) < 0.03
    men = checkups.loc[checkups["female"] == 0, "sbp"].mean()
    women = checkups.loc[checkups["female"] == 1, "sbp"].mean()
    assert 2 < men - women < 10 and 116 < checkups["sbp"].mean() < 132

    buys = load_table(iwamizawa / "drugstore" / "purchases.parquet")
    mothers = pd.concat(
        [
            load_table(iwamizawa / h / "births.csv")["subject"]
            for h in ("city-hospital", "women-clinic")
        ]
    )
    buys = buys[~buys["subject"].isin(set(mothers))]  # mothers buy more baby goods
    spend = buys.groupby("category", observed=False)["amount_yen"].sum() / buys["amount_yen"].sum()
    for category, share in cal.PURCHASE_MIX.items():
        assert abs(spend[category] - share) < 0.015, category

    dairy = load_table(iwamizawa / "dairy" / "dairy_intake.csv")
    panel = dairy[dairy["bifidobacteria_pct"].isna()]
    assert abs(panel["milk_g_day"].mean() - 100) < 15
    assert 12 <= panel["other_dairy_g_day"].mean() <= 24

    infants = load_table(iwamizawa / "city" / "infant_checkups.csv")
    four = infants[infants["age_months"] == 4]
    assert abs(_share(four["feeding"] == "breast") - 0.55) < 0.03


def test_hdp_rises_with_pre_pregnancy_pressure_and_bmi(hokkaido: pd.DataFrame) -> None:
    d = hokkaido.drop_duplicates("delivery")
    assert 104 <= d["sbp_pre"].mean() <= 110 and 8 <= d["sbp_pre"].std() <= 13
    assert (d["dbp_pre"] < d["sbp_pre"]).all()
    design = pd.DataFrame(
        {
            "sbp_10": (d["sbp_pre"] - 110) / 10,
            "bmi_25_299": (d["bmi_pre"] >= 25) & (d["bmi_pre"] < 30),
            "bmi_ge30": d["bmi_pre"] >= 30,
            "age_ge35": d["maternal_age"] >= 35,
            "primipara": d["parity"] == 1,
        }
    ).astype(float)
    fit = sm.Logit(d["hdp"].to_numpy(), sm.add_constant(design)).fit(disp=0)
    for term, truth in cal.HDP_LOG_ODDS_RATIOS.items():
        est, se = fit.params[term], fit.bse[term]
        assert abs(est - truth) <= 3 * se, (term, math.exp(est), math.exp(truth), se)
    assert fit.bse["sbp_10"] <= 0.05 and fit.bse["bmi_ge30"] <= 0.12
    assert math.exp(fit.params["sbp_10"]) == pytest.approx(2.0, rel=0.15)


def test_insurer_holds_mothers_pre_pregnancy_checkups(iwamizawa: Path) -> None:
    births = pd.concat(
        [load_table(iwamizawa / h / "births.csv") for h in ("city-hospital", "women-clinic")]
    ).drop_duplicates("subject", keep=False)
    checkups = load_table(iwamizawa / "insurer" / "checkups.parquet")
    pre = checkups[checkups["subject"].isin(set(births["subject"]))]
    assert pre["female"].eq(1).all() and pre["age"].between(15, 49).all()
    assert 0.3 <= pre["subject"].nunique() / len(births) <= 0.5  # half, less the first years
    joined = pre.merge(births, on="subject")
    before = pd.to_datetime(joined["birth_date"]) - pd.to_datetime(joined["checkup_date"])
    assert before.between(pd.Timedelta(days=180), pd.Timedelta(days=3 * 365 + 240)).all()
    assert joined["bmi"].corr(joined["bmi_pre"]) > 0.9
    per_mother = joined.groupby("subject")[["sbp", "bmi", "hdp"]].mean()
    assert per_mother.loc[per_mother["hdp"] == 1, "sbp"].mean() > (
        per_mother.loc[per_mother["hdp"] == 0, "sbp"].mean() + 5
    )


def test_pseudonyms_link_holders_and_hide_raw_ids(iwamizawa: Path) -> None:
    births = pd.concat(
        [load_table(iwamizawa / h / "births.csv") for h in ("city-hospital", "women-clinic")]
    )
    infants = load_table(iwamizawa / "city" / "infant_checkups.csv")
    buys = load_table(iwamizawa / "drugstore" / "purchases.parquet")
    dairy = load_table(iwamizawa / "dairy" / "dairy_intake.csv")
    mothers, babies = set(births["subject"]), set(births["infant"])
    assert set(infants["subject"]) <= babies
    assert len(set(infants["subject"])) > 0.9 * len(babies)
    assert set(infants["mother"]) <= mothers
    pairs = set(zip(births["infant"], births["subject"], strict=True))
    assert set(zip(infants["subject"], infants["mother"], strict=True)) <= pairs
    assert 0.25 < len(set(buys["subject"]) & mothers) / len(mothers) < 0.45
    linked = dairy[dairy["subject"].isin(mothers)].merge(
        births.drop_duplicates("subject")[["subject", "dairy_g_day"]], on="subject"
    )
    assert len(linked) > 500
    total = linked["milk_g_day"] + linked["other_dairy_g_day"]
    assert np.corrcoef(total, linked["dairy_g_day"])[0, 1] > 0.9

    key = derive_scenario_key(2017)
    expected = hmac.new(key, b"IWA-000000000", hashlib.sha256).hexdigest()[:32]
    assert pseudonymize("IWA-000000000", key) == expected
    assert expected in mothers  # the first delivery's mother
    manifest = (iwamizawa / "scenario.json").read_text()
    assert key.hex() not in manifest and json.loads(manifest)["seed"] == 2017
    for path in iwamizawa.rglob("*.csv"):
        text = path.read_text()
        assert "IWA-" not in text and key.hex() not in text, path


def test_consents_have_the_agreed_columns_and_mix(iwamizawa: Path) -> None:
    rows = []
    for folder in sorted(p for p in iwamizawa.iterdir() if p.is_dir()):
        consents = pd.read_csv(folder / "consents.csv", dtype=str, keep_default_na=False)
        assert tuple(consents.columns) == CSV_COLUMNS
        subjects = set()
        for path in folder.iterdir():
            if path.name != "consents.csv":
                subjects |= set(load_table(path)["subject"])
        assert set(consents["subject"]) == subjects, folder.name
        rows.append(consents)
    c = pd.concat(rows)
    assert set(c["status"]) == {"active", "inactive"}
    assert set(c["decision"]) == {"permit", "deny"}
    assert set(c["commercial"]) == {"yes", "no"}
    assert pd.to_datetime(c["recorded_at"], format="ISO8601").notna().all()
    first = c.groupby("subject").head(1)
    assert abs(_share(first["decision"] == "deny") - 0.05) < 0.015
    assert abs(_share(first["purposes"].str.contains("HMB")) - 0.85) < 0.03
    assert abs(_share(first["commercial"] == "yes") - 0.40) < 0.03
    assert 0.01 < _share(c["status"] == "inactive") < 0.03
    limited = c[c["period_end"] != ""]
    assert (limited["period_end"] > limited["period_start"]).all()


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    def digest(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    kwargs = {"years": [2017, 2018], "scale": 0.1}
    first = generate("iwamizawa", tmp_path / "a", seed=3, **kwargs)
    generate("iwamizawa", tmp_path / "b", seed=3, **kwargs)
    generate("iwamizawa", tmp_path / "c", seed=4, **kwargs)
    generate("iwamizawa", tmp_path / "d", seed=3, consortium_key=b"k" * 32, **kwargs)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b and len(a) == 19  # 12 data files + 6 consents.csv + scenario.json
    assert a["city-hospital/births.csv"] != c["city-hospital/births.csv"]
    other_key = load_table(tmp_path / "d" / "city-hospital" / "births.csv")
    same_seed = load_table(tmp_path / "a" / "city-hospital" / "births.csv")
    assert not set(other_key["subject"]) & set(same_seed["subject"])
    assert other_key["birth_weight_g"].tolist() == same_seed["birth_weight_g"].tolist()
    assert first.node("city").rows["infant_checkups"] > 0


def test_hokkaido_preset_shape(tmp_path: Path) -> None:
    manifest = generate("hokkaido", tmp_path, seed=1, years=[2019])
    births = [n for n in manifest.nodes if "births" in n.files]
    assert len(births) >= 50 and sum(n.rows["births"] for n in births) >= 30_000
    assert manifest.domains == ["births"] and manifest.years == [2019]
    with pytest.raises(ValueError, match="years"):
        generate("iwamizawa", tmp_path, years=[1999])
    with pytest.raises(ValueError, match="preset"):
        generate("sapporo", tmp_path)
