"""Synthetic checkups, infant checkups, drugstore purchases and dairy-intake surveys.

Every function takes integer person indices (the generator turns them into pseudonyms)
and the generator's random stream, and returns a frame in the common data model
except that ``subject`` (and ``mother``) still hold person indices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nodes.scenario import calibration as cal

__all__ = [
    "checkup_panel",
    "dairy_panel",
    "health_checkups",
    "infant_checkups",
    "mother_dairy",
    "prepregnancy_checkups",
    "purchases",
]

_INFANT_AGES = np.array([4, 10, 18, 36])
# Mean weight (kg), length (cm), head (cm) at 4, 10, 18, 36 months, boys then girls.
_INFANT_WEIGHT = {0: np.array([7.0, 9.0, 10.9, 14.1]), 1: np.array([6.5, 8.4, 10.2, 13.6])}
_INFANT_WEIGHT_SD = np.array([0.8, 1.0, 1.1, 1.4])
_INFANT_LENGTH = {0: np.array([63.0, 73.0, 81.0, 95.0]), 1: np.array([61.5, 71.5, 79.5, 94.0])}
_INFANT_LENGTH_SD = np.array([2.2, 2.5, 2.8, 3.5])
_INFANT_HEAD = {0: np.array([41.5, 45.0, 47.0, 49.5]), 1: np.array([40.5, 44.0, 46.0, 48.5])}
_BIRTH_CORR = np.array([0.6, 0.5, 0.45, 0.4])


def health_checkups(
    rng: np.random.Generator,
    persons: np.ndarray,
    years: list[int],
    *,
    female_share: float,
    uptake: float,
) -> pd.DataFrame:
    """Draw a panel of yearly specific health checkups for people aged 40-74.

    The checkup rows of :func:`checkup_panel`.

    Returns:
        The checkup rows (``subject`` = person index), sorted by subject and year.

    """
    return checkup_panel(rng, persons, years, female_share=female_share, uptake=uptake)[0]


def checkup_panel(
    rng: np.random.Generator,
    persons: np.ndarray,
    years: list[int],
    *,
    female_share: float,
    uptake: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw a panel of people and their yearly specific health checkups at 40-74.

    Each person has a birth year and lasting levels (BMI, blood pressure, lipids,
    smoking); each year they attend with probability ``uptake`` while aged 40-74.
    Values follow the checkup table of docs/calibration.md (BMI 23.1 +- 3.6, fasting glucose
    ~100 +- 17, LDL ~127 +- 30, smokers ~14 %, SBP higher in men).

    Returns:
        The checkup rows (``subject`` = person index), sorted by subject and year, and
        the people (``person``, ``birth_year``, ``female``; attenders or not).

    """
    n = len(persons)
    female = (rng.random(n) < female_share).astype(np.int64)
    first = years[0]
    birth_year = first - rng.integers(28, 75, size=n)
    height0 = np.where(female == 1, 157.0, 170.0) + rng.normal(0, 1, n) * np.where(
        female == 1, 5.3, 5.8
    )
    bmi0 = np.where(female == 1, rng.normal(22.3, 3.5, n), rng.normal(23.9, 3.4, n))
    sbp0 = rng.normal(0, 11.5, n)
    ldl0 = rng.normal(127.2, 27.0, n)
    hdl0 = np.where(female == 1, rng.normal(66, 14, n), rng.normal(55, 13, n))
    tg0 = rng.normal(0, 0.42, n)
    glu0 = rng.normal(0, 0.13, n)
    smoker = rng.random(n) < np.where(female == 1, 0.065, 0.225)
    keen = rng.beta(2.0, 2.0 * (1 - uptake) / uptake, size=n)  # person-level attendance

    rows = []
    for year in years:
        age = year - birth_year
        attend = (age >= 40) & (age <= 74) & (rng.random(n) < keen)
        idx = np.flatnonzero(attend)
        m = len(idx)
        if m == 0:
            continue
        f = female[idx]
        a = age[idx]
        height = np.round(height0[idx] - 0.12 * (a - 40) + rng.normal(0, 0.3, m), 1)
        bmi_true = np.clip(bmi0[idx] + 0.02 * (a - 55) + rng.normal(0, 0.5, m), 14.0, 48.0)
        weight = np.round(bmi_true * (height / 100) ** 2, 1)
        bmi = np.round(weight / (height / 100) ** 2, 1)
        waist = np.round(
            np.where(f == 1, 15.0 + 3.0 * bmi, 11.0 + 3.1 * bmi) + rng.normal(0, 4.0, m), 1
        )
        sbp = (
            np.where(f == 1, 124.0, 130.0)
            + np.where(f == 1, 0.6, 0.45) * (a - 57)
            + 0.9 * (bmi - 23.1)
            + sbp0[idx]
            + rng.normal(0, 8.0, m)
        )
        sbp = np.clip(np.round(sbp), 80, 240).astype(np.int64)
        dbp = np.clip(np.round(0.55 * sbp + 8.0 + rng.normal(0, 7.0, m)), 40, None)
        dbp = np.minimum(dbp, sbp - 10).astype(np.int64)
        latent = {"ldl0": ldl0[idx], "hdl0": hdl0[idx], "tg0": tg0[idx], "glu0": glu0[idx]}
        labs = _labs(rng, f, a, bmi, latent)
        day = rng.integers(150, 330, m)
        date = pd.Timestamp(f"{year}-01-01") + pd.to_timedelta(day, unit="D")
        rows.append(
            pd.DataFrame(
                {
                    "subject": persons[idx],
                    "year": year,
                    "checkup_date": date,
                    "age": a,
                    "female": f,
                    "height_cm": height,
                    "weight_kg": weight,
                    "bmi": bmi,
                    "waist_cm": waist,
                    "sbp": sbp,
                    "dbp": dbp,
                }
            )
            .join(labs.set_axis(range(m)))
            .assign(smoking=smoker[idx].astype(np.int64))
        )
    out = pd.concat(rows, ignore_index=True)
    people = pd.DataFrame({"person": persons, "birth_year": birth_year, "female": female})
    return out.sort_values(["subject", "year"], kind="stable").reset_index(drop=True), people


def _latent_labs(rng: np.random.Generator, female: np.ndarray, n: int) -> dict[str, np.ndarray]:
    return {
        "ldl0": rng.normal(127.2, 27.0, n),
        "hdl0": np.where(female == 1, rng.normal(66, 14, n), rng.normal(55, 13, n)),
        "tg0": rng.normal(0, 0.42, n),
        "glu0": rng.normal(0, 0.13, n),
    }


def _labs(
    rng: np.random.Generator,
    f: np.ndarray,
    a: np.ndarray,
    bmi: np.ndarray,
    latent: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Return the laboratory columns of one checkup per row, given sex, age, BMI and levels."""
    m = len(f)
    glucose = np.round(
        np.exp(
            np.log(96.5)
            + 0.012 * (bmi - 23.1)
            + 0.003 * (a - 55)
            + latent["glu0"]
            + rng.normal(0, 0.07, m)
        ),
        0,
    )
    hba1c = np.round(5.6 + 0.025 * (glucose - 99.7) + rng.normal(0, 0.22, m), 1)
    ldl = np.round(np.clip(latent["ldl0"] + rng.normal(0, 12.0, m), 40, 350), 0)
    hdl = np.round(np.clip(latent["hdl0"] - 0.9 * (bmi - 23.1) + rng.normal(0, 5.0, m), 20, 150), 0)
    tg = np.round(
        np.exp(
            np.log(np.where(f == 1, 85.0, 115.0))
            + 0.04 * (bmi - 23.1)
            + latent["tg0"]
            + rng.normal(0, 0.25, m)
        ),
        0,
    )
    ast = np.round(np.exp(np.log(21.0) + rng.normal(0, 0.28, m)), 0)
    alt = np.round(np.exp(np.log(17.0) + 0.05 * (bmi - 23.1) + rng.normal(0, 0.45, m)), 0)
    ggt = np.round(np.exp(np.log(np.where(f == 1, 19.0, 33.0)) + rng.normal(0, 0.55, m)), 0)
    p_ug = np.clip(0.01 + 0.6 * (hba1c >= 7.0), 0, 0.9)
    urine_glucose = np.where(rng.random(m) < p_ug, rng.integers(2, 5, m), 0)
    urine_protein = rng.choice(5, size=m, p=[0.9, 0.06, 0.03, 0.008, 0.002])
    return pd.DataFrame(
        {
            "glucose": glucose,
            "hba1c": hba1c,
            "ldl": ldl,
            "hdl": hdl,
            "tg": tg,
            "ast": ast,
            "alt": np.maximum(alt, 3),
            "ggt": np.maximum(ggt, 5),
            "urine_glucose": urine_glucose.astype(np.int64),
            "urine_protein": urine_protein.astype(np.int64),
        }
    )


def prepregnancy_checkups(
    rng: np.random.Generator, mothers: pd.DataFrame, first_year: int
) -> pd.DataFrame:
    """Draw workplace checkups of mothers in the one to three years before their birth.

    ``mothers`` needs ``mother_id``, ``birth_date``, ``maternal_age``, ``bmi_pre``,
    ``sbp_pre``, ``dbp_pre`` and ``smoking``: each mother has one to three yearly checkups
    whose BMI is her pre-pregnancy BMI up to year-to-year change (SD 0.5) and whose blood
    pressure is her pre-pregnancy pressure up to visit-to-visit noise (SD 6 / 4 mmHg);
    laboratory values follow ``health_checkups``. Checkups before ``first_year`` are not
    drawn.

    Returns:
        The checkup rows (``subject`` = mother index), sorted by subject and date.

    """
    m0 = len(mothers)
    visits = rng.integers(1, 4, m0)
    idx = np.repeat(np.arange(m0), visits)
    back = np.concatenate([np.arange(1, k + 1) for k in visits]) if m0 else np.zeros(0, int)
    mo = mothers.iloc[idx].reset_index(drop=True)
    born = pd.to_datetime(mo["birth_date"])
    date = born - pd.to_timedelta(back * 365 - rng.integers(-60, 60, len(mo)) + 120, unit="D")
    keep = (date.dt.year >= first_year).to_numpy()
    mo, date, back = mo[keep].reset_index(drop=True), date[keep].reset_index(drop=True), back[keep]
    m = len(mo)
    height = np.round(157.5 + 5.3 * rng.standard_normal(m0)[idx[keep]] + rng.normal(0, 0.3, m), 1)
    bmi_true = np.clip(mo["bmi_pre"].to_numpy(float) + rng.normal(0, 0.5, m), 13.0, 48.0)
    weight = np.round(bmi_true * (height / 100) ** 2, 1)
    bmi = np.round(weight / (height / 100) ** 2, 1)
    sbp = np.clip(np.round(mo["sbp_pre"].to_numpy(float) + rng.normal(0, 6.0, m)), 80, 200)
    dbp = np.minimum(
        np.clip(np.round(mo["dbp_pre"].to_numpy(float) + rng.normal(0, 4.0, m)), 40, None), sbp - 10
    )
    age = mo["maternal_age"].to_numpy(dtype=np.int64) - back
    f = np.ones(m, dtype=np.int64)
    table = pd.DataFrame(
        {
            "subject": mo["mother_id"].to_numpy(),
            "year": date.dt.year.to_numpy(),
            "checkup_date": date.dt.normalize().to_numpy(),
            "age": np.maximum(age, 18),
            "female": f,
            "height_cm": height,
            "weight_kg": weight,
            "bmi": bmi,
            "waist_cm": np.round(15.0 + 3.0 * bmi + rng.normal(0, 4.0, m), 1),
            "sbp": sbp.astype(np.int64),
            "dbp": dbp.astype(np.int64),
        }
    )
    labs = _labs(rng, f, age, bmi, _latent_labs(rng, f, m))
    table = pd.concat([table, labs], axis=1)
    table["smoking"] = mo["smoking"].to_numpy(dtype=np.int64)
    return table.sort_values(["subject", "checkup_date"], kind="stable").reset_index(drop=True)


def infant_checkups(
    rng: np.random.Generator, births: pd.DataFrame, last_date: pd.Timestamp
) -> pd.DataFrame:
    """Draw the municipal checkups (4, 10, 18, 36 months) of the infants in ``births``.

    ``births`` needs ``infant_id``, ``mother_id``, ``birth_date``, ``female``,
    ``birth_weight_g``. A checkup after ``last_date`` is not drawn; about 95 % attend.
    Weight keeps part of the birth-weight z-score; feeding at 4 months is breast /
    mixed / formula 55 / 35 / 10 % (MHLW 2015).

    Returns:
        The checkup rows (``subject`` = infant index, ``mother`` = mother index).

    """
    rows = []
    bw_z = (births["birth_weight_g"].to_numpy() - 3000.0) / 450.0
    female = births["female"].to_numpy()
    born = pd.to_datetime(births["birth_date"]).to_numpy()
    n = len(births)
    for k, months in enumerate(_INFANT_AGES):
        date = born + pd.to_timedelta(np.round(months * 30.44 + rng.normal(0, 8, n)), unit="D")
        keep = (date <= last_date.to_datetime64()) & (rng.random(n) < 0.95)
        idx = np.flatnonzero(keep)
        m = len(idx)
        z = _BIRTH_CORR[k] * bw_z[idx] + np.sqrt(1 - _BIRTH_CORR[k] ** 2) * rng.standard_normal(m)
        f = female[idx]
        w_mean = np.where(f == 1, _INFANT_WEIGHT[1][k], _INFANT_WEIGHT[0][k])
        l_mean = np.where(f == 1, _INFANT_LENGTH[1][k], _INFANT_LENGTH[0][k])
        h_mean = np.where(f == 1, _INFANT_HEAD[1][k], _INFANT_HEAD[0][k])
        z_len = 0.7 * z + np.sqrt(1 - 0.49) * rng.standard_normal(m)
        feeding: np.ndarray = np.full(m, None, dtype=object)
        if months == 4:
            feeding = rng.choice(
                np.array(["breast", "mixed", "formula"], dtype=object), size=m, p=[0.55, 0.35, 0.10]
            )
        rows.append(
            pd.DataFrame(
                {
                    "subject": births["infant_id"].to_numpy()[idx],
                    "mother": births["mother_id"].to_numpy()[idx],
                    "checkup_date": date[idx],
                    "age_months": int(months),
                    "female": f,
                    "weight_g": np.round((w_mean + _INFANT_WEIGHT_SD[k] * z) * 1000).astype(
                        np.int64
                    ),
                    "length_cm": np.round(l_mean + _INFANT_LENGTH_SD[k] * z_len, 1),
                    "head_cm": np.round(h_mean + 1.3 * (0.6 * z + 0.8 * rng.standard_normal(m)), 1),
                    "feeding": feeding,
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    return out.sort_values(["checkup_date", "subject"], kind="stable").reset_index(drop=True)


def purchases(
    rng: np.random.Generator,
    persons: np.ndarray,
    years: list[int],
    baby_years: dict[int, int] | None = None,
) -> pd.DataFrame:
    """Draw loyalty-card purchase lines whose spend follows the drugstore sales mix.

    Each member buys about 10 lines a year (gamma-distributed between members); the
    category of a line follows ``PURCHASE_MIX`` and amounts share one distribution,
    so spend by category follows the mix. A member who had a baby in year ``y``
    (``baby_years[person] = y``) buys baby goods four times as often in ``y`` and ``y+1``.

    Returns:
        The purchase lines (``subject`` = person index), sorted by date and subject.

    """
    cats = np.array(list(cal.PURCHASE_MIX), dtype=object)
    mix = np.array(list(cal.PURCHASE_MIX.values()))
    mix = mix / mix.sum()
    baby = list(cats).index("health_care_baby")
    boosted = mix.copy()
    boosted[baby] *= 4.0
    boosted /= boosted.sum()
    rate = rng.gamma(2.0, 5.0, size=len(persons))
    baby_years = baby_years or {}
    rows = []
    for year in years:
        counts = rng.poisson(rate)
        subj = np.repeat(persons, counts)
        m = len(subj)
        by = np.array([baby_years.get(int(s), -10) for s in subj])
        boost = (year - by >= 0) & (year - by <= 1)
        u = rng.random(m)
        cat_idx = np.where(
            boost,
            np.searchsorted(np.cumsum(boosted), u, side="right"),
            np.searchsorted(np.cumsum(mix), u, side="right"),
        )
        cat_idx = np.minimum(cat_idx, len(cats) - 1)
        quantity = 1 + rng.poisson(0.4, m)
        amount = np.round(np.exp(np.log(650.0) + 0.8 * rng.standard_normal(m)) * quantity)
        day = rng.integers(0, 365, m)
        rows.append(
            pd.DataFrame(
                {
                    "subject": subj,
                    "purchase_date": pd.Timestamp(f"{year}-01-01") + pd.to_timedelta(day, unit="D"),
                    "category": cats[cat_idx],
                    "quantity": quantity.astype(np.int64),
                    "amount_yen": np.maximum(amount, 1).astype(np.int64),
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    return out.sort_values(["purchase_date", "subject"], kind="stable").reset_index(drop=True)


def dairy_panel(rng: np.random.Generator, persons: np.ndarray, years: list[int]) -> pd.DataFrame:
    """Draw yearly dietary surveys of the dairy company's resident panel.

    Milk averages about 100 g/day (a fifth drink none) and other dairy about 18 g/day
    (national nutrition survey); about 70 % answer each year.

    Returns:
        The survey rows (``subject`` = person index), ``bifidobacteria_pct`` missing.

    """
    n = len(persons)
    drinker = rng.random(n) < 0.8
    level = rng.gamma(1.6, 78.0, n)
    other_level = rng.gamma(1.2, 15.0, n)
    rows = []
    for year in years:
        idx = np.flatnonzero(rng.random(n) < 0.7)
        m = len(idx)
        milk = np.where(drinker[idx], level[idx] * rng.lognormal(0, 0.2, m), 0.0)
        other = other_level[idx] * rng.lognormal(0, 0.3, m)
        day = rng.integers(0, 365, m)
        rows.append(
            pd.DataFrame(
                {
                    "subject": persons[idx],
                    "survey_date": pd.Timestamp(f"{year}-01-01") + pd.to_timedelta(day, unit="D"),
                    "milk_g_day": np.round(milk, 0),
                    "other_dairy_g_day": np.round(other, 0),
                    "bifidobacteria_pct": np.nan,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def mother_dairy(rng: np.random.Generator, mothers: pd.DataFrame) -> pd.DataFrame:
    """Draw one mid-pregnancy survey for each mother in the dairy partner's programme.

    ``mothers`` needs ``mother_id``, ``birth_date`` and ``dairy_g_day``; the survey is
    about 120 days before the birth and its milk + other dairy equals the pregnancy
    intake recorded at the maternity facility up to survey noise. Stool bifidobacteria
    proportion (fed back by the partner) rises with dairy intake.

    Returns:
        The survey rows (``subject`` = mother index).

    """
    m = len(mothers)
    total = mothers["dairy_g_day"].to_numpy(dtype=float) * rng.lognormal(0, 0.1, m)
    share = np.clip(rng.normal(0.85, 0.06, m), 0.5, 1.0)
    born = pd.to_datetime(mothers["birth_date"]).to_numpy()
    date = born - pd.to_timedelta(rng.integers(100, 140, m), unit="D")
    bifido = np.clip(12.0 + 0.05 * total + rng.normal(0, 9.0, m), 0.5, 85.0)
    return pd.DataFrame(
        {
            "subject": mothers["mother_id"].to_numpy(),
            "survey_date": date,
            "milk_g_day": np.round(total * share, 0),
            "other_dairy_g_day": np.round(total * (1 - share), 0),
            "bifidobacteria_pct": np.round(bifido, 1),
        }
    )
