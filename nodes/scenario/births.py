"""Synthetic births: maternal covariates, a calibrated logistic LBW model, then weights.

Each newborn's low-birth-weight status is drawn from a logistic model whose adjusted
odds ratios are ``LBW_LOG_ODDS_RATIOS`` and whose per-year intercept is solved
numerically so that the *expected* LBW rate of that year equals its target (over the
covariate distribution, estimated on a fixed large reference sample). Gestational
weeks are then drawn given LBW and plurality, and the birth weight from a normal
distribution around the growth-curve mean for those weeks, truncated to the side of
2,500 g that ``lbw`` says, so that weights and ``lbw`` always agree.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from nodes.scenario import calibration as cal

__all__ = [
    "LbwModel",
    "draw_deliveries",
    "expand_newborns",
    "hdp_linear_predictor",
    "lbw_design",
    "simulate_births",
]

REFERENCE_SEED = 20_170_401
REFERENCE_DELIVERIES = 200_000

# Mean birth weight (g) of a singleton boy by completed gestational week 22..42 (after
# Japanese birth-weight-for-gestational-age standards, rounded; *assumed*).
_WEEK_MEAN_BOY = np.array(
    [
        520,
        590,
        670,
        770,
        880,
        1000,
        1130,
        1280,
        1430,
        1600,
        1780,
        1980,
        2180,
        2390,
        2578,
        2788,
        2948,
        3068,
        3168,
        3248,
        3288,
    ],
    dtype=float,
)
_FIRST_WEEK = 22
_GIRL_FACTOR = 0.972
_TWIN_SHIFT_G = -260.0
_SD_FRACTION = 0.125

# Weeks given (lbw, term): probabilities over the listed weeks (*assumed*).
_TERM_WEEKS = np.arange(37, 43)
_TERM_NORMAL_P = np.array([0.08, 0.19, 0.30, 0.29, 0.12, 0.02])
_TERM_LBW_P = np.array([0.40, 0.30, 0.17, 0.10, 0.03, 0.0])
_LATE_PRETERM_WEEKS = np.arange(33, 37)
_LATE_PRETERM_P = np.array([0.08, 0.17, 0.30, 0.45])

# P(preterm | lbw, multiple) (*assumed*, giving singletons ~4.7 %, multiples ~50 %).
_P_PRETERM = {(0, 0): 0.019, (1, 0): 0.37, (0, 1): 0.15, (1, 1): 0.57}


def _band_index(values: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), values, side="right")


def hdp_linear_predictor(
    sbp_pre: np.ndarray, bmi_pre: np.ndarray, maternal_age: np.ndarray, parity: np.ndarray
) -> np.ndarray:
    """Return the log odds of a hypertensive disorder of pregnancy, without intercept.

    Returns:
        ``HDP_LOG_ODDS_RATIOS`` applied to pre-pregnancy systolic pressure (per 10 mmHg
        above 110), BMI 25-29.9 and >= 30, age >= 35 and a first birth.

    """
    lor = cal.HDP_LOG_ODDS_RATIOS
    bmi = np.asarray(bmi_pre, dtype=float)
    return np.asarray(
        lor["sbp_10"] * (np.asarray(sbp_pre, dtype=float) - 110.0) / 10.0
        + lor["bmi_25_299"] * ((bmi >= 25.0) & (bmi < 30.0))
        + lor["bmi_ge30"] * (bmi >= 30.0)
        + lor["age_ge35"] * (np.asarray(maternal_age) >= 35)
        + lor["primipara"] * (np.asarray(parity) == 1),
        dtype=float,
    )


def draw_deliveries(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Draw the mothers' covariates of ``n`` deliveries.

    Returns:
        A frame with ``maternal_age``, ``parity``, ``bmi_pre``, ``smoking``, ``alcohol``,
        ``hdp``, ``sbp_pre``, ``dbp_pre`` (blood pressure before pregnancy, mmHg),
        ``gwg_kg``, ``multiple``, ``calcium_mg``, ``dairy_g_day``, one row per
        delivery (a twin delivery is one row here).

    """
    bands = cal.AGE_BANDS
    probs = np.array([b[2] for b in bands])
    band = rng.choice(len(bands), size=n, p=probs / probs.sum())
    lows = np.array([b[0] for b in bands], dtype=float)
    highs = np.array([b[1] for b in bands], dtype=float)
    age_exact = lows[band] + rng.random(n) * (highs[band] - lows[band])
    maternal_age = np.floor(age_exact).astype(np.int64)

    # Birth order through a Gaussian copula with age (older mothers have more children).
    age_rank = (stats.rankdata(age_exact) - 0.5) / max(n, 1)
    latent = 0.45 * special.ndtri(age_rank) + np.sqrt(1 - 0.45**2) * rng.standard_normal(n)
    cum = np.cumsum(cal.BIRTH_ORDER)[:-1] / sum(cal.BIRTH_ORDER)
    parity = 1 + np.searchsorted(special.ndtri(cum), latent)
    fourth_plus = parity >= 4
    parity[fourth_plus] = 4 + rng.geometric(0.65, size=int(fourth_plus.sum())) - 1
    # Under-20s rarely have a third child; cap birth order by age.
    parity = np.minimum(parity, np.maximum(1, (maternal_age - 14) // 2)).astype(np.int64)

    bmi_bands = cal.BMI_BANDS
    bprobs = np.array([b[2] for b in bmi_bands])
    bband = rng.choice(len(bmi_bands), size=n, p=bprobs / bprobs.sum())
    blo = np.array([b[0] for b in bmi_bands])
    bhi = np.array([b[1] for b in bmi_bands])
    u = rng.random(n)
    u = np.where(bband == len(bmi_bands) - 1, u**1.8, u)  # obese tail is right-skewed
    bmi_pre = np.floor((blo[bband] + u * (bhi[bband] - blo[bband])) * 10) / 10

    smoking = (
        rng.random(n)
        < np.where(maternal_age < 25, 2.0, 0.85) * cal.SMOKING_RATE / (2.0 * 0.096 + 0.85 * 0.904)
    ).astype(np.int64)
    alcohol = (rng.random(n) < cal.ALCOHOL_RATE).astype(np.int64)
    # Pre-pregnancy blood pressure rises with BMI and age; HDP is logistic in it and in
    # the BMI bands at the odds ratios of ``HDP_LOG_ODDS_RATIOS``, its rate ``HDP_RATE``.
    sbp_pre = np.clip(
        np.round(
            cal.SBP_PRE_MEAN
            + cal.SBP_PRE_PER_BMI * (bmi_pre - 21.0)
            + 0.3 * (maternal_age - 30)
            + cal.SBP_PRE_SD * rng.standard_normal(n)
        ),
        80,
        170,
    ).astype(np.int64)
    dbp_pre = np.minimum(
        np.round(0.6 * sbp_pre + 3.0 + 6.0 * rng.standard_normal(n)), sbp_pre - 15
    ).astype(np.int64)
    hdp_eta = hdp_linear_predictor(sbp_pre, bmi_pre, maternal_age, parity)
    hdp_alpha = _solve_intercept(hdp_eta, cal.HDP_RATE) if n else 0.0
    hdp = (rng.random(n) < special.expit(hdp_alpha + hdp_eta)).astype(np.int64)
    twin_w = np.exp(0.5 * (maternal_age >= 35))
    multiple = (rng.random(n) < cal.MULTIPLE_DELIVERY_RATE * twin_w / twin_w.mean()).astype(
        np.int64
    )

    gwg_mean = np.select(
        [bmi_pre < 18.5, bmi_pre < 25, bmi_pre < 30],
        [cal.GWG_UNDER[0], cal.GWG_NORMAL[0], cal.GWG_OVER[0]],
        cal.GWG_OBESE[0],
    )
    gwg_sd = np.select(
        [bmi_pre < 18.5, bmi_pre < 25, bmi_pre < 30],
        [cal.GWG_UNDER[1], cal.GWG_NORMAL[1], cal.GWG_OVER[1]],
        cal.GWG_OBESE[1],
    )
    gwg_kg = np.round(
        np.clip(gwg_mean + 2.5 * multiple + gwg_sd * rng.standard_normal(n), -10, 35), 1
    )

    # Dairy (milk + other, ~120 g/day) and calcium (JECS quintile medians 199..899 mg,
    # lognormal, median 430) share a latent factor (correlation ~0.6).
    z_dairy = rng.standard_normal(n)
    dairy = stats.gamma.ppf(special.ndtr(z_dairy), a=1.5, scale=80.0)
    dairy_g_day = np.round(np.clip(dairy, 0, 1500), 0)
    z_ca = 0.6 * z_dairy + 0.8 * rng.standard_normal(n)
    calcium_mg = np.round(np.clip(np.exp(np.log(430.0) + 0.59 * z_ca), 40, 4000), 0)

    return pd.DataFrame(
        {
            "maternal_age": maternal_age,
            "parity": parity,
            "bmi_pre": bmi_pre,
            "smoking": smoking,
            "alcohol": alcohol,
            "hdp": hdp,
            "sbp_pre": sbp_pre,
            "dbp_pre": dbp_pre,
            "gwg_kg": gwg_kg,
            "multiple": multiple,
            "calcium_mg": calcium_mg,
            "dairy_g_day": dairy_g_day,
        }
    )


def expand_newborns(deliveries: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Turn deliveries into newborns: a twin delivery becomes two rows.

    Returns:
        The newborn rows with the delivery's columns, a ``delivery`` column (index into
        ``deliveries``) and ``female`` (0/1).

    """
    reps = np.where(deliveries["multiple"].to_numpy() == 1, 2, 1)
    idx = np.repeat(np.arange(len(deliveries)), reps)
    out = deliveries.iloc[idx].reset_index(drop=True)
    out.insert(0, "delivery", idx)
    out["female"] = (rng.random(len(out)) < cal.FEMALE_SHARE).astype(np.int64)
    return out


def lbw_design(df: pd.DataFrame) -> pd.DataFrame:
    """Return the LBW model's terms for each newborn (no intercept).

    Returns:
        A float frame with one column per key of ``LBW_LOG_ODDS_RATIOS``.

    """
    bmi = df["bmi_pre"].to_numpy(dtype=float)
    age = df["maternal_age"].to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "bmi_lt17": bmi < 17.0,
            "bmi_17_18": (bmi >= 17.0) & (bmi < 18.5),
            "bmi_185_199": (bmi >= 18.5) & (bmi < 20.0),
            "bmi_23_249": (bmi >= 23.0) & (bmi < 25.0),
            "bmi_25_299": (bmi >= 25.0) & (bmi < 30.0),
            "bmi_ge30": bmi >= 30.0,
            "age_lt20": age < 20,
            "age_20_24": (age >= 20) & (age < 25),
            "age_30_34": (age >= 30) & (age < 35),
            "age_35_39": (age >= 35) & (age < 40),
            "age_ge40": age >= 40,
            "primipara": df["parity"].to_numpy() == 1,
            "smoking": df["smoking"].to_numpy(),
            "alcohol": df["alcohol"].to_numpy(),
            "hdp": df["hdp"].to_numpy(),
            "female": df["female"].to_numpy(),
            "multiple": df["multiple"].to_numpy(),
            "gwg_kg": df["gwg_kg"].to_numpy(dtype=float),
            "dairy_100g": df["dairy_g_day"].to_numpy(dtype=float) / 100.0,
        }
    ).astype(float)[list(cal.LBW_LOG_ODDS_RATIOS)]


@dataclass(frozen=True)
class LbwModel:
    """The logistic LBW model: fixed adjusted log odds ratios, an intercept per year.

    Attributes:
        log_odds_ratios: the coefficients by term (see ``lbw_design``).
        intercepts: the intercept of each year, solved from that year's target rate.
        targets: the expected LBW rate of each year.

    """

    log_odds_ratios: Mapping[str, float]
    intercepts: Mapping[int, float]
    targets: Mapping[int, float]

    @classmethod
    def calibrated(cls, targets: Mapping[int, float]) -> LbwModel:
        """Solve each year's intercept so the expected LBW rate equals its target.

        Returns:
            The calibrated model.

        Raises:
            ValueError: a target is not strictly between 0 and 1.

        """
        for year, rate in targets.items():
            if not 0.0 < rate < 1.0:
                raise ValueError(f"targets[{year}]: a rate must lie in (0, 1), not {rate}")
        eta = _reference_linear_predictor()
        intercepts = {int(y): _solve_intercept(eta, float(r)) for y, r in targets.items()}
        return cls(dict(cal.LBW_LOG_ODDS_RATIOS), intercepts, dict(targets))

    def linear_predictor(self, newborns: pd.DataFrame, years: np.ndarray) -> np.ndarray:
        """Return the log odds of LBW of each newborn in its year.

        Raises:
            KeyError: a year has no intercept.

        """
        design = lbw_design(newborns).to_numpy()
        beta = np.array([self.log_odds_ratios[k] for k in cal.LBW_LOG_ODDS_RATIOS])
        alpha = np.array([self.intercepts[int(y)] for y in years])
        return np.asarray(alpha + design @ beta, dtype=float)

    def expected_rate(self, year: int, newborns: pd.DataFrame | None = None) -> float:
        """Return the expected LBW rate of ``year`` over ``newborns``' covariates.

        Args:
            year: a year of the model.
            newborns: covariates to average over; by default the fixed reference sample.

        Returns:
            The mean predicted probability of LBW.

        Raises:
            KeyError: ``year`` has no intercept.

        """
        eta = (
            _reference_linear_predictor()
            if newborns is None
            else lbw_design(newborns).to_numpy() @ np.array(list(self.log_odds_ratios.values()))
        )
        return float(special.expit(self.intercepts[int(year)] + eta).mean())


@functools.lru_cache(maxsize=1)
def _reference_linear_predictor() -> np.ndarray:
    rng = np.random.default_rng(REFERENCE_SEED)
    newborns = expand_newborns(draw_deliveries(rng, REFERENCE_DELIVERIES), rng)
    beta = np.array(list(cal.LBW_LOG_ODDS_RATIOS.values()))
    eta = lbw_design(newborns).to_numpy() @ beta
    eta.setflags(write=False)
    return eta


def _solve_intercept(eta: np.ndarray, target: float) -> float:
    return float(
        optimize.brentq(lambda a: special.expit(a + eta).mean() - target, -30.0, 30.0, xtol=1e-12)
    )


def _draw_weeks(rng: np.random.Generator, lbw: np.ndarray, multiple: np.ndarray) -> np.ndarray:
    n = len(lbw)
    p_pre = np.array([_P_PRETERM[(int(a), int(b))] for a, b in zip(lbw, multiple, strict=True)])
    preterm = rng.random(n) < p_pre
    weeks = np.empty(n, dtype=np.int64)
    term_lbw = ~preterm & (lbw == 1)
    term_ok = ~preterm & (lbw == 0)
    weeks[term_ok] = rng.choice(_TERM_WEEKS, size=int(term_ok.sum()), p=_TERM_NORMAL_P)
    weeks[term_lbw] = rng.choice(_TERM_WEEKS, size=int(term_lbw.sum()), p=_TERM_LBW_P)
    pre_ok = preterm & (lbw == 0)
    weeks[pre_ok] = rng.choice(_LATE_PRETERM_WEEKS, size=int(pre_ok.sum()), p=_LATE_PRETERM_P)
    pre_lbw = preterm & (lbw == 1)
    early = 36 - np.floor(rng.exponential(3.5, size=int(pre_lbw.sum()))).astype(np.int64)
    weeks[pre_lbw] = np.clip(early, _FIRST_WEEK, 36)
    return weeks


def _draw_weights(
    rng: np.random.Generator, newborns: pd.DataFrame, weeks: np.ndarray, lbw: np.ndarray
) -> np.ndarray:
    female = newborns["female"].to_numpy()
    mean = _WEEK_MEAN_BOY[weeks - _FIRST_WEEK] * np.where(female == 1, _GIRL_FACTOR, 1.0)
    mean = mean + np.where(newborns["multiple"].to_numpy() == 1, _TWIN_SHIFT_G, 0.0) * (weeks >= 33)
    shift = (
        -150.0 * newborns["smoking"].to_numpy()
        - 120.0 * newborns["hdp"].to_numpy()
        + 12.0 * (newborns["gwg_kg"].to_numpy() - 11.0)
        + 10.0 * (newborns["dairy_g_day"].to_numpy() / 100.0 - 1.2)
        + 18.0 * (np.clip(newborns["bmi_pre"].to_numpy(), 15, 32) - 21.0)
    )
    mean = mean + shift * (weeks >= 34)
    sd = _SD_FRACTION * mean
    low = np.where(lbw == 1, 300.0, 2500.0)
    high = np.where(lbw == 1, 2499.0, 5800.0)
    a, b = (low - mean) / sd, (high - mean) / sd
    draws = stats.truncnorm.rvs(a, b, loc=mean, scale=sd, random_state=rng)
    weight = np.round(draws).astype(np.int64)
    return np.where(lbw == 1, np.clip(weight, 300, 2499), np.clip(weight, 2500, 5800))


def simulate_births(
    rng: np.random.Generator,
    deliveries_by_year: Mapping[int, int],
    model: LbwModel,
) -> pd.DataFrame:
    """Draw the newborns of every year.

    Args:
        rng: the generator's random stream.
        deliveries_by_year: how many deliveries (not newborns) each year has.
        model: the calibrated LBW model; it must have every year's intercept.

    Returns:
        One row per newborn: ``delivery`` (0-based, unique across years), ``year``,
        ``day_of_year`` (0-based), the covariates of ``draw_deliveries``, ``female``,
        ``gestational_weeks``, ``preterm``, ``birth_weight_g`` and ``lbw``.

    Raises:
        KeyError: a year has no intercept in ``model``.

    """
    years = sorted(deliveries_by_year)
    total = int(sum(deliveries_by_year[y] for y in years))
    deliveries = draw_deliveries(rng, total)
    deliveries["year"] = np.repeat(years, [deliveries_by_year[y] for y in years]).astype(np.int64)
    deliveries["day_of_year"] = rng.integers(0, 365, size=total)
    newborns = expand_newborns(deliveries, rng)
    eta = model.linear_predictor(newborns, newborns["year"].to_numpy())
    lbw = (rng.random(len(newborns)) < special.expit(eta)).astype(np.int64)
    weeks = _draw_weeks(rng, lbw, newborns["multiple"].to_numpy())
    newborns["gestational_weeks"] = weeks
    newborns["preterm"] = (weeks < 37).astype(np.int64)
    newborns["birth_weight_g"] = _draw_weights(rng, newborns, weeks, lbw)
    newborns["lbw"] = lbw
    return newborns
