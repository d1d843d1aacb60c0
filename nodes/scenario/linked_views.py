"""Holder-local views for linked jobs: one row per linkage key, from a holder's own tables.

A linked job aligns holders on one key per row, so each holder first shapes its own
records (never another holder's) into one row per resident: the maternity facility's
births per mother, the dairy partner's pregnancy survey, the drugstore's pregnancy
purchases, the city's infant checkups by age, the insurer's checkups of women of
child-bearing age. Mothers with more than one birth (or infant) in the data are left out
of the views keyed by mother, so a key names one pregnancy. The city's watching-over
records become one row per elderly resident (mean alerts a year), and a holder's
checkups one row per resident with a blood-pressure group.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

__all__ = [
    "CHECKUP_AGES",
    "HOLDER_VIEWS",
    "alerts_per_resident",
    "births_by_mother",
    "checkup_bp_group",
    "infant_growth",
    "pregnancy_dairy",
    "pregnancy_supplements",
    "prepregnancy_checkup",
]

#: The city's infant checkup ages (months).
CHECKUP_AGES = (4, 10, 18, 36)


def births_by_mother(births: pd.DataFrame) -> pd.DataFrame:
    """Return one row per mother with a single birth: ``subject``/``mother`` and the birth.

    Adds ``bw_group`` (``lbw`` under 2,500 g, else ``normal``).
    """
    once = births[~births["subject"].duplicated(keep=False)].copy()
    once["bw_group"] = once["lbw"].astype(int).map({1: "lbw", 0: "normal"})
    once["mother"] = once["subject"]
    return once.reset_index(drop=True)


def pregnancy_dairy(surveys: pd.DataFrame) -> pd.DataFrame:
    """Return one row per surveyed resident: ``subject`` and ``dairy_g`` (milk + other, g/day).

    A resident surveyed more than once (the panel) gets the mean of the surveys.
    """
    total = surveys["milk_g_day"].astype(float) + surveys["other_dairy_g_day"].astype(float)
    out = total.groupby(surveys["subject"]).mean().rename("dairy_g").reset_index()
    return out


def pregnancy_supplements(purchases: pd.DataFrame) -> pd.DataFrame:
    """Return one row per loyalty-card member: ``subject`` and ``supplement`` (bought any, 0/1)."""
    bought = purchases["category"].astype(str).eq("supplements")
    out = bought.groupby(purchases["subject"]).any().astype(float).rename("supplement")
    return out.reset_index()


def infant_growth(checkups: pd.DataFrame) -> pd.DataFrame:
    """Return one row per mother with one infant: ``weight_kg_<age>m`` and ``length_cm_<age>m``.

    A checkup not attended leaves its columns missing.
    """
    one = checkups.groupby("mother")["subject"].transform("nunique") == 1
    c = checkups[one & checkups["age_months"].isin(CHECKUP_AGES)]
    c = c.drop_duplicates(["mother", "age_months"])
    wide = c.pivot(index="mother", columns="age_months", values=["weight_g", "length_cm"])
    out = pd.DataFrame(index=wide.index)
    for age in CHECKUP_AGES:
        if ("weight_g", age) in wide:
            out[f"weight_kg_{age}m"] = wide[("weight_g", age)].astype(float) / 1000.0
            out[f"length_cm_{age}m"] = wide[("length_cm", age)].astype(float)
    return out.reset_index()


def prepregnancy_checkup(checkups: pd.DataFrame) -> pd.DataFrame:
    """Return one row per woman checked at 15-49: her mean ``checkup_sbp_10``, ``checkup_bmi``.

    ``checkup_sbp_10`` is systolic pressure in units of 10 mmHg (so a GLM's odds ratio
    is per 10 mmHg), ``checkup_dbp`` diastolic in mmHg. The holder does not know of any
    pregnancy: the linkage to births is what makes these pre-pregnancy values.
    """
    young = checkups[(checkups["female"].astype(int) == 1) & checkups["age"].between(15, 49)]
    means = young.groupby("subject")[["sbp", "dbp", "bmi"]].mean()
    return pd.DataFrame(
        {
            "checkup_sbp_10": means["sbp"].astype(float) / 10.0,
            "checkup_dbp": means["dbp"].astype(float),
            "checkup_bmi": means["bmi"].astype(float),
        }
    ).reset_index()


def alerts_per_resident(watching: pd.DataFrame) -> pd.DataFrame:
    """Return one row per enrolled resident: ``alerts_per_year`` and ``urgent_share``.

    ``alerts_per_year`` is the mean over the years enrolled, ``urgent_share`` the share of
    those years with an alert that needed an emergency visit.
    """
    by = watching.groupby("subject")
    return pd.DataFrame(
        {
            "alerts_per_year": by["alerts"].mean().astype(float),
            "urgent_share": by["urgent"].mean().astype(float),
        }
    ).reset_index()


def checkup_bp_group(checkups: pd.DataFrame) -> pd.DataFrame:
    """Return one row per resident checked: mean ``checkup_sbp``, ``checkup_bmi``, ``bp_group``.

    ``bp_group`` is ``high`` when the mean systolic pressure is 140 mmHg or more (the
    checkup programme's referral cut-off), else ``normal``.
    """
    means = checkups.groupby("subject")[["sbp", "bmi"]].mean()
    return pd.DataFrame(
        {
            "checkup_sbp": means["sbp"].astype(float),
            "checkup_bmi": means["bmi"].astype(float),
            "bp_group": (means["sbp"] >= 140).map({True: "high", False: "normal"}),
        }
    ).reset_index()


#: Per holder, the views it can make: ``(view name, the table it reads, the function)``.
#: ``hamanasu scenario views`` writes each as ``OUT/<holder>/<view name>.csv``.
HOLDER_VIEWS: dict[str, list[tuple[str, str, Callable[[pd.DataFrame], pd.DataFrame]]]] = {
    "city": [
        ("alerts_per_resident", "watching_over", alerts_per_resident),
        ("infant_growth", "infant_checkups", infant_growth),
    ],
    "city-hospital": [("births_by_mother", "births", births_by_mother)],
    "women-clinic": [("births_by_mother", "births", births_by_mother)],
    "dairy": [("pregnancy_dairy", "dairy_intake", pregnancy_dairy)],
    "drugstore": [("pregnancy_supplements", "purchases", pregnancy_supplements)],
    "insurer": [
        ("checkup_bp_group", "checkups", checkup_bp_group),
        ("prepregnancy_checkup", "checkups", prepregnancy_checkup),
    ],
}
