"""Synthetic consent histories of one holder's subjects, in the shared ``consents.csv`` layout.

Columns: the consent importer's (:data:`consent.csv_io.CSV_COLUMNS`). One row per
consent version; a later row supersedes an earlier one, a later ``inactive`` row is a
withdrawal. ``purposes`` lists the DUO codes the row permits (or, for ``deny``, refuses;
empty = every purpose); ``domains`` empty = every domain; empty period bounds are open.

Mix (about): 85 % permit health/medical research (``HMB``, a third of them also
``GRU``), 10 % permit disease-specific research only (``DS``), 5 % deny all; 40 % of
everyone permits commercial use; 2 % withdraw later; 3 % change their commercial choice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from consent.csv_io import CSV_COLUMNS

__all__ = ["consent_history"]

DENY_SHARE = 0.05
DS_ONLY_SHARE = 0.10
#: Disease-specific consent: disorders related to short gestation and low birth weight.
DS_PURPOSE = "DS:ICD10:P07"
GRU_SHARE_OF_HMB = 0.35
COMMERCIAL_SHARE_OF_HMB = 0.47
WITHDRAW_SHARE = 0.02
CHANGE_SHARE = 0.03


def consent_history(
    rng: np.random.Generator,
    subjects: np.ndarray,
    first_dates: np.ndarray,
    disposition: np.ndarray,
    domains: tuple[str, ...],
    last_date: pd.Timestamp,
) -> pd.DataFrame:
    """Draw the consent rows of one holder.

    Args:
        rng: the generator's random stream.
        subjects: the holder's distinct pseudonyms.
        first_dates: the date of each subject's first record (consent is recorded
            1-60 days before).
        disposition: a uniform number per subject shared across holders, so that the
            same resident tends to decide alike everywhere (80 % of the time).
        domains: the holder's domains (a few consents name a subset).
        last_date: no event is recorded after this date.

    Returns:
        The rows, sorted by ``recorded_at`` then ``subject``, all values as text.

    """
    n = len(subjects)
    u = np.where(rng.random(n) < 0.8, disposition, rng.random(n))
    deny = u < DENY_SHARE
    ds_only = (u >= DENY_SHARE) & (u < DENY_SHARE + DS_ONLY_SHARE)
    hmb = ~deny & ~ds_only
    gru = hmb & (rng.random(n) < GRU_SHARE_OF_HMB)
    purposes = np.where(deny, "", np.where(ds_only, DS_PURPOSE, np.where(gru, "HMB;GRU", "HMB")))
    commercial = np.where(hmb & (rng.random(n) < COMMERCIAL_SHARE_OF_HMB), "yes", "no")
    restrict = (rng.random(n) < 0.1) & ~deny
    dom = np.where(restrict, np.array(domains, dtype=object)[rng.integers(0, len(domains), n)], "")

    first = pd.to_datetime(pd.Series(first_dates)).to_numpy()
    recorded = np.asarray(
        first.astype("datetime64[m]")
        - rng.integers(1, 61, n).astype("timedelta64[D]")
        + rng.integers(9 * 60, 17 * 60, n).astype("timedelta64[m]"),
        dtype="datetime64[m]",
    )
    limited = (rng.random(n) < 0.15) & ~deny
    start = pd.Series(recorded).dt.strftime("%Y-%m-%d").to_numpy()
    end = (pd.Series(recorded) + pd.DateOffset(years=5)).dt.strftime("%Y-%m-%d").to_numpy()
    base = pd.DataFrame(
        {
            "subject": subjects,
            "recorded_at": recorded,
            "status": "active",
            "decision": np.where(deny, "deny", "permit"),
            "purposes": purposes,
            "commercial": commercial,
            "domains": dom,
            "period_start": np.where(limited, start, ""),
            "period_end": np.where(limited, end, ""),
        }
    )

    def later(mask: np.ndarray) -> np.ndarray:
        end = np.datetime64(last_date.date(), "m")
        span = np.maximum((end - recorded[mask]).astype(np.int64), 60 * 24 * 31)
        offset = (rng.random(int(mask.sum())) * (span - 60 * 24 * 30)).astype(np.int64)
        return recorded[mask] + (60 * 24 * 30 + offset).astype("timedelta64[m]")

    change = ~deny & (rng.random(n) < CHANGE_SHARE)
    changed = base[change].copy()
    changed["recorded_at"] = later(change)
    changed["commercial"] = np.where(changed["commercial"] == "yes", "no", "yes")
    changed.loc[changed["purposes"] == DS_PURPOSE, "commercial"] = "no"
    withdraw = ~deny & ~change & (rng.random(n) < WITHDRAW_SHARE)
    withdrawn = base[withdraw].copy()
    withdrawn["recorded_at"] = later(withdraw)
    withdrawn["status"] = "inactive"

    out = pd.concat([base, changed, withdrawn], ignore_index=True)
    out = out[
        out["recorded_at"].to_numpy()
        < np.datetime64(last_date.date(), "m") + np.timedelta64(1, "D")
    ]
    out = out.sort_values(["recorded_at", "subject"], kind="stable").reset_index(drop=True)
    out["recorded_at"] = (
        pd.to_datetime(out["recorded_at"]).dt.floor("min").dt.strftime("%Y-%m-%dT%H:%M:00+09:00")
    )
    return out[list(CSV_COLUMNS)].astype(str)
