"""The city's living services: domains from the schema file only, data at the city node,
calibrated to the published figures of docs/calibration.md."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.cdm import DEFAULT_SCHEMA_FILE, load_schema_file
from nodes.data_loading import load_table
from nodes.mapping import load_mapping
from nodes.scenario import calibration as cal
from nodes.scenario.databases import write_sqlite
from nodes.scenario.generator import generate
from nodes.scenario.living import ALERT_RATE_RATIOS, LIVING_DOMAINS, living_services
from nodes.sql_source import check_mapping

ROOT = Path(__file__).resolve().parents[2]


def test_the_living_domains_come_from_the_schema_file_and_no_library_code_names_them():
    schema = load_schema_file(DEFAULT_SCHEMA_FILE)
    assert set(LIVING_DOMAINS) <= set(schema.domains)
    for domain in LIVING_DOMAINS:
        assert schema.domains[domain].column("subject").role == "key"
    # Validation, mapping, policies, jobs and the coordinator know them from the file alone:
    # only the scenario's generator (which draws their rows) names them in Python.
    pattern = re.compile("|".join(LIVING_DOMAINS))
    for package in ("consent", "policies", "federation", "nodes", "coordinator"):
        for source in (ROOT / package).rglob("*.py"):
            if "scenario" in source.relative_to(ROOT).parts:
                continue
            assert not pattern.search(source.read_text(encoding="utf-8")), source


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("living")
    generate("iwamizawa", out, years=[2019, 2020, 2021], scale=0.5)
    return out


def test_the_city_node_holds_every_living_domain_and_its_database_maps_them_cleanly(scenario):
    from nodes.scenario.generator import ScenarioManifest

    manifest = ScenarioManifest.model_validate_json((scenario / "scenario.json").read_text())
    city = manifest.node("city")
    assert set(LIVING_DOMAINS) <= set(city.files)
    for domain in LIVING_DOMAINS:
        frame = load_table(scenario / "city" / city.files[domain], domain)  # validated
        assert len(frame) == city.rows[domain] > 0
    consents = pd.read_csv(scenario / "city" / "consents.csv", dtype=str)
    keyed = pd.concat(
        pd.read_csv(scenario / "city" / city.files[d])
        if city.files[d].endswith(".csv")
        else pd.read_parquet(scenario / "city" / city.files[d])
        for d in LIVING_DOMAINS
    )["subject"]
    assert set(keyed) <= set(consents["subject"])  # every resident has a consent history
    report = check_mapping(load_mapping(write_sqlite(scenario / "city", city.files)))
    for domain in LIVING_DOMAINS:
        read = report[domain]
        assert not isinstance(read, list) and not read.problems
        assert read.rows_read == city.rows[domain]


def _people(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    people = pd.DataFrame(
        {
            "person": np.arange(n),
            "birth_year": 2020 - rng.integers(20, 95, n),
            "female": (rng.random(n) < 0.5).astype(np.int64),
        }
    )
    known = rng.random(n) < 0.7
    history = pd.DataFrame(
        {
            "sbp": np.where(rng.random(n) < 0.3, 150.0, 120.0),
            "bmi": np.full(n, 23.0),
            "hba1c": np.full(n, 5.5),
        },
        index=pd.Index(people["person"], name="person"),
    )[known]
    return people, history


def test_the_living_services_follow_the_published_figures_and_the_stated_assumptions():
    rng = np.random.default_rng(7)
    people, history = _people(120_000, rng)
    employed = rng.random(len(people)) < 0.6
    tables = living_services(np.random.default_rng(8), people, history, [2020, 2022], employed)
    age = {y: y - people.set_index("person")["birth_year"] for y in (2020, 2022)}

    # telework: registered share of employees aged 18-64 = the regional-city figure
    tele = tables["telework"]
    workers = people["person"][
        employed & (age[2022].to_numpy() >= 18) & (age[2022].to_numpy() <= 64)
    ]
    share = (tele["year"] == 2022).sum() / len(workers)
    assert share == pytest.approx(cal.TELEWORK_REGIONAL[2022], abs=0.01)
    assert tele["days_per_week"].mean() == pytest.approx(cal.TELEWORK_DAYS_MEAN, abs=0.05)

    # watching-over: 30 % (assumed) of those living alone, at the census shares by sex
    watch = tables["watching_over"]
    w20 = watch[watch["year"] == 2020]
    women = people.set_index("person")["female"]
    old = age[2020][(age[2020] >= 65) & (age[2020] < 75)]
    for sex, alone in ((0, cal.LIVING_ALONE_65[2020][0]), (1, cal.LIVING_ALONE_65[2020][1])):
        base = old[women.loc[old.index] == sex]
        got = w20["subject"].isin(base.index).sum() / len(base)
        assert got == pytest.approx(0.30 * alone * cal.LIVING_ALONE_AGE_FACTOR[0], abs=0.008)

    # alerts rise with a history of high blood pressure: rate ratio 1.5 (assumed)
    hist = history.reindex(watch["subject"].to_numpy())
    high = watch[(hist["sbp"] == 150).to_numpy()]
    normal = watch[(hist["sbp"] == 120).to_numpy()]
    ratio = high["alerts"].mean() / normal["alerts"].mean()
    # the two groups' ages differ only by chance, so the ratio is the assumed one
    assert ratio == pytest.approx(ALERT_RATE_RATIOS["hypertension"], rel=0.1)

    # evacuation register: 40.1 % share their entry with supporters in advance
    register = tables["evacuation_support"]
    assert register["subject"].is_unique
    assert register["shared_in_advance"].mean() == pytest.approx(
        cal.EVACUATION_SHARED_IN_ADVANCE, abs=0.03
    )
    # only residents 65+ use the elderly services
    for domain, date in (("transport_trips", "trip_date"), ("shopping_support", "order_date")):
        t = tables[domain]
        years = pd.to_datetime(t[date]).dt.year.to_numpy()
        ages = years - people.set_index("person").loc[t["subject"], "birth_year"].to_numpy()
        assert len(t) > 0 and ages.min() >= 65
