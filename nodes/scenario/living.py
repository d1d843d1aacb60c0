"""Synthetic records of the city's living services, drawn for the scenario's residents.

The city runs five services for its residents, each a table of the city's own records:
watching-over of elderly people living alone (``watching_over``), on-demand shared
transport (``transport_trips``), shopping support (``shopping_support``), the register
of people who need help to evacuate (``evacuation_support``) and a telework programme
(``telework``). Their columns come from the data model's schema file; this module only
draws rows, from published figures where they exist (``calibration``) and stated
assumptions otherwise (docs/calibration.md, "The city's living services").

Relations carried across domains and holders: an elderly resident's alerts rise with
age and with a checkup history of high blood pressure, diabetes, or a BMI under 18.5
or of 30 and over (the history may sit at the city or at the insurer); people living
alone use transport and shopping support more and are registered for evacuation help
more often; clinic rides are more frequent with the same history.

Every function takes integer person indices (the generator turns them into pseudonyms).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from nodes.scenario import calibration as cal

__all__ = [
    "ALERT_RATE_RATIOS",
    "LIVING_DOMAINS",
    "checkup_history",
    "living_services",
]

#: The living-service domains, in the order they are written.
LIVING_DOMAINS = (
    "watching_over",
    "transport_trips",
    "shopping_support",
    "evacuation_support",
    "telework",
)

# -- assumptions (no published figure found; docs/calibration.md says so) -------------------
_ENROL_WATCHING = 0.30  # of residents 65+ living alone
_ALERTS_AT_75 = 0.8  # alerts a year at 75 with no risk in the history
_ALERTS_PER_YEAR_OF_AGE = 0.06  # log rate per year of age
#: Alert rate ratios for a checkup history (mean systolic >= 140 mmHg, highest HbA1c >=
#: 6.5 %, mean BMI < 18.5 or >= 30); no checkup history at all: 1.2.
ALERT_RATE_RATIOS: Mapping[str, float] = {
    "hypertension": 1.5,
    "diabetes": 1.4,
    "underweight": 1.4,
    "obese": 1.2,
    "no_history": 1.2,
}
_URGENT_PER_ALERT = 0.08
_TRANSPORT_USER = 0.06  # of residents 65+; x2 living alone, x1.5 at 75+
_TRIPS_A_YEAR = 12.0
_PURPOSES = ("clinic", "shopping", "public_office", "social", "other")
_PURPOSE_MIX = np.array([0.38, 0.34, 0.06, 0.12, 0.10])
_CLINIC_WITH_HISTORY = 1.6
_SHOPPING_USER = 0.15  # of residents with difficult food access; x1.5 living alone
_ORDERS_A_YEAR = 16.0
_SERVICES = ("delivery", "mobile_shop", "shopping_bus")
_SERVICE_MIX = np.array([0.60, 0.25, 0.15])
_REGISTER_ALONE = (0.10, 0.35)  # 65-74, 75+ living alone
_REGISTER_FRAIL = 0.08  # 80+ not living alone
_REGISTER_ENROLLED = 1.5  # watching-over enrollees
_OTHER_REASON = {"care_needs": 0.15, "disability": 0.05}
_INDIVIDUAL_PLAN = 0.25
_PLACES = ("home", "satellite_office", "coworking")
_PLACE_MIX = np.array([0.80, 0.12, 0.08])


def checkup_history(checkups: pd.DataFrame) -> pd.DataFrame:
    """Return each person's checkup history: mean systolic and BMI, highest HbA1c.

    ``checkups`` holds checkup rows with ``subject`` as person index (any holder's).

    Returns:
        One row per person (index ``person``) with ``sbp``, ``bmi``, ``hba1c``.
    """
    by = checkups.groupby("subject")
    out = pd.DataFrame(
        {"sbp": by["sbp"].mean(), "bmi": by["bmi"].mean(), "hba1c": by["hba1c"].max()}
    )
    out.index.name = "person"
    return out


def _risk(people: pd.DataFrame, history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return each person's alert rate ratio and whether the history holds a risk."""
    h = history.reindex(people["person"].to_numpy())
    sbp, bmi, hba1c = (h[c].to_numpy(dtype=float) for c in ("sbp", "bmi", "hba1c"))
    known = ~np.isnan(sbp)
    r = ALERT_RATE_RATIOS
    ratio = np.ones(len(people))
    ratio *= np.where(known & (sbp >= 140), r["hypertension"], 1.0)
    ratio *= np.where(known & (hba1c >= 6.5), r["diabetes"], 1.0)
    ratio *= np.where(known & (bmi < 18.5), r["underweight"], 1.0)
    ratio *= np.where(known & (bmi >= 30), r["obese"], 1.0)
    ratio = np.where(known, ratio, r["no_history"])
    flagged = known & ((sbp >= 140) | (hba1c >= 6.5))
    return ratio, flagged


def _alone_share(year: int, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Return the chance of living alone at ``age`` in ``year`` (0 under 65)."""
    points = sorted(cal.LIVING_ALONE_65)
    men = np.interp(year, points, [cal.LIVING_ALONE_65[y][0] for y in points])
    women = np.interp(year, points, [cal.LIVING_ALONE_65[y][1] for y in points])
    band = np.digitize(age, [75, 85])
    factor = np.asarray(cal.LIVING_ALONE_AGE_FACTOR)[band]
    return np.where(age >= 65, np.where(female == 1, women, men) * factor, 0.0)


def _dates(rng: np.random.Generator, year: int, n: int) -> pd.DatetimeIndex:
    return pd.Timestamp(f"{year}-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D")


def _events(
    rng: np.random.Generator, persons: np.ndarray, rate: np.ndarray, year: int
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    counts = rng.poisson(rate)
    subj = np.repeat(persons, counts)
    return subj, _dates(rng, year, len(subj))


def living_services(
    rng: np.random.Generator,
    people: pd.DataFrame,
    history: pd.DataFrame,
    years: list[int],
    employed: np.ndarray,
) -> dict[str, pd.DataFrame]:
    """Draw the five living-service tables for ``people`` over ``years``.

    Args:
        rng: the generator's stream for the living services.
        people: ``person``, ``birth_year``, ``female`` of every resident drawn.
        history: :func:`checkup_history` of those who had checkups (city or insurer).
        years: the scenario's years.
        employed: per person, whether they are an employee (telework is for employees).

    Returns:
        Domain -> table (``subject`` = person index), in :data:`LIVING_DOMAINS` order.
    """
    n = len(people)
    persons = people["person"].to_numpy()
    born = people["birth_year"].to_numpy()
    female = people["female"].to_numpy().astype(np.int64)
    ratio, flagged = _risk(people, history)
    u_alone, u_enrol, u_user, u_access, u_shop = (rng.random(n) for _ in range(5))
    frailty = rng.gamma(2.0, 0.5, n)
    trip_rate = rng.gamma(2.0, _TRIPS_A_YEAR / 2.0, n)
    order_rate = rng.gamma(2.0, _ORDERS_A_YEAR / 2.0, n)
    u_tele = rng.random(n)
    registered = np.zeros(n, dtype=bool)
    was_eligible = np.zeros(n, dtype=bool)
    out: dict[str, list[pd.DataFrame]] = {d: [] for d in LIVING_DOMAINS}
    for year in years:
        age = year - born
        alone = u_alone < _alone_share(year, age, female)
        enrolled = alone & (u_enrol < _ENROL_WATCHING)
        idx = np.flatnonzero(enrolled)
        lam = (
            _ALERTS_AT_75
            * np.exp(_ALERTS_PER_YEAR_OF_AGE * (age[idx] - 75))
            * ratio[idx]
            * frailty[idx]
        )
        alerts = np.minimum(rng.poisson(lam), 365)
        urgent = rng.random(len(idx)) < 1 - (1 - _URGENT_PER_ALERT) ** alerts
        out["watching_over"].append(
            pd.DataFrame(
                {
                    "subject": persons[idx],
                    "year": year,
                    "age": age[idx],
                    "female": female[idx],
                    "alerts": alerts.astype(np.int64),
                    "urgent": urgent.astype(np.int64),
                }
            )
        )
        p_user = _TRANSPORT_USER * np.where(alone, 2.0, 1.0) * np.where(age >= 75, 1.5, 1.0)
        users = np.flatnonzero((age >= 65) & (u_user < p_user))
        out["transport_trips"].append(
            _trips(rng, persons[users], trip_rate[users], flagged[users], year)
        )
        p_access = np.where(age >= 75, cal.FOOD_ACCESS_DIFFICULT[1], cal.FOOD_ACCESS_DIFFICULT[0])
        shoppers = (age >= 65) & (u_access < p_access)
        shoppers &= u_shop < _SHOPPING_USER * np.where(alone, 1.5, 1.0)
        sidx = np.flatnonzero(shoppers)
        out["shopping_support"].append(_orders(rng, persons[sidx], order_rate[sidx], year))
        eligible = (age >= 65) & (alone | (age >= 80)) & ~was_eligible
        was_eligible |= (age >= 65) & (alone | (age >= 80))
        p_alone = np.where(age >= 75, _REGISTER_ALONE[1], _REGISTER_ALONE[0])
        p_reg = np.where(alone, p_alone, _REGISTER_FRAIL)
        p_reg = np.minimum(p_reg * np.where(enrolled, _REGISTER_ENROLLED, 1.0), 1.0)
        new = eligible & ~registered & (rng.random(n) < p_reg)
        registered |= new
        out["evacuation_support"].append(_register(rng, persons, age, female, alone, new, year))
        out["telework"].append(_telework(rng, persons, age, female, employed, u_tele, year))
    return {d: pd.concat(frames, ignore_index=True) for d, frames in out.items()}


def _trips(
    rng: np.random.Generator,
    persons: np.ndarray,
    rate: np.ndarray,
    flagged: np.ndarray,
    year: int,
) -> pd.DataFrame:
    """Return one year of on-demand rides; clinic rides more often with a risky history."""
    counts = rng.poisson(rate)
    subj = np.repeat(persons, counts)
    risky = np.repeat(flagged, counts)
    m = len(subj)
    weights = np.tile(_PURPOSE_MIX, (m, 1))
    weights[:, 0] *= np.where(risky, _CLINIC_WITH_HISTORY, 1.0)
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    pick = np.minimum((rng.random((m, 1)) > cum).sum(axis=1), len(_PURPOSES) - 1)
    distance = np.round(np.clip(np.exp(np.log(3.5) + 0.6 * rng.standard_normal(m)), 0.3, 40.0), 1)
    fare = 300 + 100 * np.floor(np.maximum(distance - 3.0, 0.0) / 2.0)
    return pd.DataFrame(
        {
            "subject": subj,
            "trip_date": _dates(rng, year, m),
            "purpose": np.asarray(_PURPOSES, dtype=object)[pick],
            "distance_km": distance,
            "fare_yen": fare.astype(np.int64),
        }
    )


def _orders(
    rng: np.random.Generator, persons: np.ndarray, rate: np.ndarray, year: int
) -> pd.DataFrame:
    """Return one year of shopping-support orders."""
    subj, dates = _events(rng, persons, rate, year)
    m = len(subj)
    items = np.minimum(1 + rng.poisson(7.0, m), 200)
    amount = np.round(items * np.exp(np.log(380.0) + 0.4 * rng.standard_normal(m)))
    return pd.DataFrame(
        {
            "subject": subj,
            "order_date": dates,
            "service": rng.choice(np.asarray(_SERVICES, dtype=object), size=m, p=_SERVICE_MIX),
            "items": items.astype(np.int64),
            "amount_yen": np.maximum(amount, 1).astype(np.int64),
        }
    )


def _register(
    rng: np.random.Generator,
    persons: np.ndarray,
    age: np.ndarray,
    female: np.ndarray,
    alone: np.ndarray,
    new: np.ndarray,
    year: int,
) -> pd.DataFrame:
    """Return the residents newly registered for evacuation help in ``year``."""
    idx = np.flatnonzero(new)
    m = len(idx)
    reason = np.where(alone[idx], "elderly_alone", "frail_elderly").astype(object)
    u = rng.random(m)
    care, disability = _OTHER_REASON["care_needs"], _OTHER_REASON["disability"]
    reason = np.where(u < care, "care_needs", np.where(u < care + disability, "disability", reason))
    return pd.DataFrame(
        {
            "subject": persons[idx],
            "registered_date": _dates(rng, year, m),
            "age": age[idx],
            "female": female[idx],
            "reason": reason,
            "shared_in_advance": (rng.random(m) < cal.EVACUATION_SHARED_IN_ADVANCE).astype(
                np.int64
            ),
            "individual_plan": (rng.random(m) < _INDIVIDUAL_PLAN).astype(np.int64),
        }
    )


def _telework(
    rng: np.random.Generator,
    persons: np.ndarray,
    age: np.ndarray,
    female: np.ndarray,
    employed: np.ndarray,
    u_tele: np.ndarray,
    year: int,
) -> pd.DataFrame:
    """Return one year of telework registrations of employees aged 18-64.

    A steady core (85 % of the year's share, the same people each year) plus others
    that year (15 %), so the share registered follows ``TELEWORK_REGIONAL``.
    """
    points = sorted(cal.TELEWORK_REGIONAL)
    share = float(np.interp(year, points, [cal.TELEWORK_REGIONAL[y] for y in points]))
    working = employed & (age >= 18) & (age <= 64)
    reg = working & ((u_tele < 0.85 * share) | (rng.random(len(persons)) < 0.15 * share))
    idx = np.flatnonzero(reg)
    m = len(idx)
    days = np.minimum(1 + rng.poisson(cal.TELEWORK_DAYS_MEAN - 1.0, m), 5)
    return pd.DataFrame(
        {
            "subject": persons[idx],
            "year": year,
            "age": age[idx],
            "female": female[idx],
            "days_per_week": days.astype(np.int64),
            "place": rng.choice(np.asarray(_PLACES, dtype=object), size=m, p=_PLACE_MIX),
        }
    )
