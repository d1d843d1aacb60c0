"""A hospital's own database, shaped as hospitals keep it: other table and column names,
other units and codes, a cancelled-record flag; and the mapping that reads it as births."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

MAPPING = """\
{url_line}
{schema_line}
row_limit = 100000
timeout_s = 30
complete_case = {complete_case}

[domains.births]
table = "deliveries"
where = "cancelled = 0"

[domains.births.columns]
subject = "mother_pid"
infant = "baby_pid"
birth_date = {{ from = "delivered_on", date_format = "%Y%m%d" }}
year = {{ derive = "year", of = "birth_date" }}
facility = {{ value = "city-hospital" }}
maternal_age = "mat_age"
parity = "birth_order"
bmi_pre = "bmi_before"
smoking = {{ from = "smoke_cd", codes = {{ N = 0, Y = 1, EX = 0 }} }}
alcohol = "alc"
hdp = {{ from = "hdp_code", codes = {{ O13 = 1, O14 = 1, NONE = 0 }} }}
gwg_kg = {{ from = "weight_gain_g", convert = "g->kg", round = 1 }}
multiple = "multi"
female = {{ from = "sex", codes = {{ M = 0, F = 1 }} }}
gestational_weeks = {{ from = "ga_days", convert = "days->weeks", round = "floor" }}
preterm = {{ derive = "flag_below", of = "gestational_weeks", threshold = 37 }}
birth_weight_g = {{ from = "bw_kg", convert = "kg->g", round = 0 }}
lbw = {{ derive = "flag_below", of = "birth_weight_g", threshold = 2500 }}
calcium_mg = "ca_mg"
dairy_g_day = "dairy"
"""


def holder_table(births: pd.DataFrame, seed: int = 5) -> pd.DataFrame:
    """Return ``births`` as the hospital keeps it, plus cancelled rows the filter drops."""
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(
        {
            "mother_pid": births["subject"],
            "baby_pid": births["infant"],
            "delivered_on": pd.to_datetime(births["birth_date"]).dt.strftime("%Y%m%d"),
            "mat_age": births["maternal_age"],
            "birth_order": births["parity"],
            "bmi_before": births["bmi_pre"],
            "smoke_cd": np.where(births["smoking"] == 1, "Y", rng.choice(["N", "EX"], len(births))),
            "alc": births["alcohol"],
            "hdp_code": np.where(
                births["hdp"] == 1, rng.choice(["O13", "O14"], len(births)), "NONE"
            ),
            "weight_gain_g": (births["gwg_kg"] * 1000).round().astype(int),
            "multi": births["multiple"],
            "sex": np.where(births["female"] == 1, "F", "M"),
            "ga_days": births["gestational_weeks"] * 7 + rng.integers(0, 7, len(births)),
            "bw_kg": births["birth_weight_g"] / 1000.0,
            "ca_mg": births["calcium_mg"],
            "dairy": births["dairy_g_day"],
            "cancelled": 0,
        }
    )
    void = out.sample(5, random_state=seed).assign(cancelled=1, bw_kg=-1.0, smoke_cd="??")
    return pd.concat([out, void], ignore_index=True)


def write_holder(engine: sa.Engine, table: pd.DataFrame, schema: str | None = None) -> None:
    """Write the hospital's ``deliveries`` table (replacing it)."""
    table.to_sql("deliveries", engine, schema=schema, index=False, if_exists="replace")


def write_mapping(
    path: Path,
    *,
    url: str | None = None,
    url_env: str | None = None,
    schema: str | None = None,
    complete_case: bool = False,
) -> Path:
    """Write the hospital's mapping file and return its path."""
    url_line = f'url = "{url}"' if url else f'url_env = "{url_env}"'
    schema_line = f'schema = "{schema}"' if schema else ""
    path.write_text(
        MAPPING.format(
            url_line=url_line,
            schema_line=schema_line,
            complete_case=str(complete_case).lower(),
        )
    )
    return path
