"""The seeded scenario generator: every holder's data folder plus ``scenario.json``.

``generate`` writes ``out_dir/<holder>/`` with one file per domain (Parquet when the
table has more than ``PARQUET_MIN_ROWS`` rows, CSV otherwise; ``nodes.data_loading``
reads either) and a ``consents.csv``, then ``out_dir/scenario.json``. The same preset,
seed, years and key give byte-identical files.

Every person has a synthetic resident id (never written) and a consortium pseudonym,
HMAC-SHA256(key, resident id) truncated to 32 hex digits; the same person carries the
same pseudonym at every holder. The key is a parameter; by default a throwaway key is
derived from the seed, and it is written nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from federation.cdm import get_schema
from nodes.scenario import domains as dom
from nodes.scenario.births import LbwModel, simulate_births
from nodes.scenario.consents import consent_history
from nodes.scenario.living import LIVING_DOMAINS, checkup_history, living_services
from nodes.scenario.presets import Preset, get_preset
from nodes.scenario.pseudonyms import derive_scenario_key, pseudonymize_many

__all__ = [
    "PARQUET_MIN_ROWS",
    "NodeManifest",
    "ScenarioManifest",
    "build_births",
    "generate",
]

PARQUET_MIN_ROWS = 20_000
_TWIN_DELIVERY_FACTOR = 1.011  # newborns per delivery
# Mothers insured by the employer society, who have workplace checkups before pregnancy
# (*assumed*: about half of women of child-bearing age are employees or their dependants).
_INSURED_MOTHERS = 0.5

_HOLDERS = {
    "city": "Iwamizawa city: specific health checkups (NHI, 40-74), infant checkups and the "
    "living services (watching-over, on-demand transport, shopping support, evacuation "
    "register, telework)",
    "insurer": "employer health-insurance society: checkups (members 40-74, and workplace "
    "checkups of insured women before pregnancy)",
    "drugstore": "drugstore chain: loyalty-card purchases",
    "dairy": "dairy company: dietary surveys and mothers' stool bifidobacteria",
    "city-hospital": "Iwamizawa city general hospital: births",
    "women-clinic": "women's clinic: births",
}


class NodeManifest(BaseModel):
    """One holder's folder in the scenario.

    Attributes:
        name: the holder, also the folder name.
        description: who the holder is.
        files: the data file of each domain, relative to the holder's folder.
        rows: the row count of each domain.
        subjects: distinct pseudonyms in the holder's data.
        consent_rows: rows of ``consents.csv``.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    files: dict[str, str]
    rows: dict[str, int]
    subjects: int
    consent_rows: int


class ScenarioManifest(BaseModel):
    """What ``generate`` wrote (saved as ``scenario.json``; never holds the key).

    Attributes:
        preset: the preset name.
        seed: the seed.
        years: the years generated.
        domains: every domain present in some holder.
        nodes: the holders, in folder-name order.
        lbw_targets: the expected LBW rate of each year (keys are years as text).
        pseudonyms: how pseudonyms were made.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str
    seed: int
    years: list[int]
    domains: list[str]
    nodes: list[NodeManifest]
    lbw_targets: dict[str, float]
    pseudonyms: str = "HMAC-SHA256(consortium key, resident id), first 32 hex digits"

    def node(self, name: str) -> NodeManifest:
        """Return the holder called ``name``.

        Raises:
            KeyError: no such holder.

        """
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in the scenario")


def _resolve_years(preset: Preset, years: Sequence[int] | None) -> list[int]:
    chosen = sorted({int(y) for y in (preset.years if years is None else years)})
    if not chosen:
        raise ValueError("years: give at least one year")
    missing = [y for y in chosen if y not in preset.lbw_targets]
    if missing:
        raise ValueError(
            f"years: {missing} outside the {preset.name} preset "
            f"({min(preset.lbw_targets)}..{max(preset.lbw_targets)})"
        )
    return chosen


def build_births(
    preset: str, seed: int = 2017, *, years: Sequence[int] | None = None, scale: float = 1.0
) -> pd.DataFrame:
    """Draw a preset's births in memory, with integer person indices, no pseudonyms.

    This is the births part of ``generate`` (same streams, same draws), exposed so that
    tests and benchmarks can check the calibration without writing files.

    Args:
        preset: ``iwamizawa`` or ``hokkaido``.
        seed: the scenario seed.
        years: a subset of the preset's years; default all.
        scale: multiplies the expected number of births (e.g. 0.1 for a quick sample).

    Returns:
        One row per newborn with the births columns, except that ``mother_id`` and
        ``infant_id`` (0-based person indices) replace ``subject`` and ``infant``.

    Raises:
        ValueError: unknown preset, a year outside the preset, or ``scale`` <= 0.

    """
    spec = get_preset(preset)
    chosen = _resolve_years(spec, years)
    if not scale > 0:
        raise ValueError(f"scale: must be > 0, not {scale}")
    streams = _streams(seed)
    return _births(spec, chosen, streams, scale)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    names = (
        "births",
        "facilities",
        "city",
        "insurer",
        "infants",
        "drugstore",
        "dairy",
        "consents",
        "disposition",
        "living",
        "living_consents",
    )
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def _births(
    spec: Preset, years: list[int], streams: dict[str, np.random.Generator], scale: float
) -> pd.DataFrame:
    rng = streams["births"]
    model = LbwModel.calibrated({y: spec.lbw_targets[y] for y in years})
    counts = {y: int(rng.poisson(scale * spec.newborns[y] / _TWIN_DELIVERY_FACTOR)) for y in years}
    b = simulate_births(rng, counts, model)
    n_deliveries = int(sum(counts.values()))
    b["mother_id"] = b["delivery"].astype(np.int64)
    b["infant_id"] = n_deliveries + np.arange(len(b), dtype=np.int64)
    start = pd.to_datetime(b["year"].astype(str) + "-01-01")
    b["birth_date"] = start + pd.to_timedelta(b["day_of_year"], unit="D")

    frng = streams["facilities"]
    deliv = b.drop_duplicates("delivery")
    if len(spec.facilities) == 2:
        high_risk = (
            (deliv["hdp"] == 1) | (deliv["multiple"] == 1) | (deliv["maternal_age"] >= 40)
        ).to_numpy()
        p_first = np.where(high_risk, 0.9, spec.facility_weights[0] - 0.02)
        choice = np.where(frng.random(len(deliv)) < p_first, 0, 1)
    else:
        w = frng.lognormal(0.0, 0.6, len(spec.facilities))
        choice = frng.choice(len(spec.facilities), size=len(deliv), p=w / w.sum())
    fac = pd.Series(
        np.asarray(spec.facilities, dtype=object)[choice], index=deliv["delivery"].to_numpy()
    )
    b["facility"] = fac.loc[b["delivery"].to_numpy()].to_numpy()
    return b


def _births_table(b: pd.DataFrame, names: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "subject": names[b["mother_id"].to_numpy()],
            "infant": names[b["infant_id"].to_numpy()],
        }
    )
    for col in get_schema("births").names[2:]:
        out[col] = b[col].to_numpy()
    return out


def _write(frame: pd.DataFrame, folder: Path, stem: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    if len(frame) > PARQUET_MIN_ROWS:
        name = f"{stem}.parquet"
        frame.to_parquet(folder / name, index=False)
    else:
        name = f"{stem}.csv"
        text = frame.copy()
        for col in text.columns:
            if pd.api.types.is_datetime64_any_dtype(text[col]):
                text[col] = text[col].dt.strftime("%Y-%m-%d")
        text.to_csv(folder / name, index=False, lineterminator="\n")
    return name


def _extra_residents(
    rng: np.random.Generator, first_id: int, n_old: int, n_young: int, first_year: int
) -> pd.DataFrame:
    """Draw residents with no checkup at any holder.

    They are 75-94 (the specific checkups end at 74) or young employees 20-39 in the
    first year (women 60 % and 45 %, *assumed*).

    Returns:
        ``person``, ``birth_year``, ``female`` of each.
    """
    n = n_old + n_young
    age = np.concatenate([rng.integers(75, 95, n_old), rng.integers(20, 40, n_young)])
    share = np.concatenate([np.full(n_old, 0.60), np.full(n_young, 0.45)])
    return pd.DataFrame(
        {
            "person": np.arange(first_id, first_id + n, dtype=np.int64),
            "birth_year": first_year - age,
            "female": (rng.random(n) < share).astype(np.int64),
        }
    )


def _record_dates(raw: pd.DataFrame) -> np.ndarray:
    """Return each row's date: its ``*_date`` column, else 1 January of its ``year``."""
    date_col = next((c for c in raw.columns if str(c).endswith("_date")), None)
    if date_col is not None:
        return raw[date_col].to_numpy()
    return pd.to_datetime(raw["year"].astype(str) + "-01-01").to_numpy()


def _consents(
    streams: dict[str, np.random.Generator],
    names: np.ndarray,
    disposition: np.ndarray,
    firsts: dict[str, pd.DataFrame],
    last_date: pd.Timestamp,
) -> tuple[pd.DataFrame, int]:
    """Return a holder's consent rows and its number of subjects.

    Subjects of the living-service domains who appear in no other domain of the holder
    draw from their own stream, so adding those domains leaves every other consent as
    it was.
    """

    def draw(stream: str, first: pd.Series, domains: tuple[str, ...]) -> pd.DataFrame:
        ids = first.index.to_numpy(dtype=np.int64)
        return consent_history(
            streams[stream], names[ids], first.to_numpy(), disposition[ids], domains, last_date
        )

    def earliest(domains: list[str]) -> pd.Series:
        return pd.concat([firsts[d] for d in domains]).groupby("id", sort=True)["date"].min()

    core = [d for d in firsts if d not in LIVING_DOMAINS]
    first = earliest(core)
    consents = draw("consents", first, tuple(core))
    living = [d for d in firsts if d in LIVING_DOMAINS]
    if not living:
        return consents, len(first)
    extra = earliest(living)
    extra = extra[~extra.index.isin(first.index)]
    more = draw("living_consents", extra, tuple(firsts))
    both = pd.concat([consents, more], ignore_index=True)
    both = both.sort_values(["recorded_at", "subject"], kind="stable").reset_index(drop=True)
    return both, len(first) + len(extra)


def generate(
    preset: str,
    out_dir: Path,
    seed: int = 2017,
    *,
    years: Sequence[int] | None = None,
    scale: float = 1.0,
    consortium_key: bytes | None = None,
) -> ScenarioManifest:
    """Generate a scenario: each holder's data folder, consents and ``scenario.json``.

    Args:
        preset: ``iwamizawa`` (two maternity facilities plus city, insurer, drugstore and
            dairy holders) or ``hokkaido`` (60 maternity facilities, births only).
        out_dir: created if needed; existing holder files are overwritten.
        seed: the scenario seed; the same arguments give byte-identical files.
        years: a subset of the preset's years (default all, 2013-2025).
        scale: multiplies every table's expected size (births, panels, members).
        consortium_key: the HMAC key of the pseudonyms (at least 16 bytes); default a
            throwaway key derived from the seed. It is never written.

    Returns:
        The manifest, also written to ``out_dir/scenario.json``.

    Raises:
        ValueError: unknown preset, a year outside the preset, ``scale`` <= 0 or a
            key shorter than 16 bytes.

    """
    spec = get_preset(preset)
    chosen = _resolve_years(spec, years)
    if not scale > 0:
        raise ValueError(f"scale: must be > 0, not {scale}")
    key = derive_scenario_key(seed) if consortium_key is None else consortium_key
    if len(key) < 16:
        raise ValueError("consortium_key: needs at least 16 bytes")
    out_dir = Path(out_dir)
    streams = _streams(seed)
    births = _births(spec, chosen, streams, scale)
    next_id = int(births["infant_id"].max()) + 1 if len(births) else 0
    last_date = pd.Timestamp(f"{chosen[-1]}-12-31")

    tables: dict[str, dict[str, pd.DataFrame]] = {}  # holder -> domain -> table (indices)
    for fac in spec.facilities:
        tables[fac] = {"births": births[births["facility"] == fac]}

    if spec.city_domains:
        n_nhi, n_ins = round(6000 * scale), round(8000 * scale)
        nhi = np.arange(next_id, next_id + n_nhi)
        ins = np.arange(next_id + n_nhi, next_id + n_nhi + n_ins)
        next_id += n_nhi + n_ins
        city_checkups, nhi_people = dom.checkup_panel(
            streams["city"], nhi, chosen, female_share=0.55, uptake=0.35
        )
        tables["city"] = {
            "checkups": city_checkups,
            "infant_checkups": dom.infant_checkups(streams["infants"], births, last_date),
        }
        irng = streams["insurer"]
        members, ins_people = dom.checkup_panel(irng, ins, chosen, female_share=0.42, uptake=0.73)
        mothers = births.drop_duplicates("mother_id")
        insured = mothers[irng.random(len(mothers)) < _INSURED_MOTHERS]
        pre = dom.prepregnancy_checkups(irng, insured, chosen[0])
        tables["insurer"] = {"checkups": pd.concat([members, pre], ignore_index=True)}
        drng = streams["drugstore"]
        shop_years = [y for y in chosen if y >= 2017] or chosen
        recent = mothers[mothers["year"] >= shop_years[0]]
        members_m = recent[drng.random(len(recent)) < 0.4]
        n_shop = round(2000 * scale)
        shoppers = np.arange(next_id, next_id + n_shop)
        next_id += n_shop
        baby_years = dict(
            zip(members_m["mother_id"].astype(int), members_m["year"].astype(int), strict=True)
        )
        persons = np.concatenate([shoppers, members_m["mother_id"].to_numpy()])
        tables["drugstore"] = {"purchases": dom.purchases(drng, persons, shop_years, baby_years)}

        yrng = streams["dairy"]
        dairy_years = [y for y in chosen if y >= 2015] or chosen
        n_panel = round(1500 * scale)
        panel = np.arange(next_id, next_id + n_panel)
        next_id += n_panel
        programme = mothers[(mothers["year"] >= dairy_years[0])]
        programme = programme[yrng.random(len(programme)) < 0.3]
        surveys = pd.concat(
            [dom.dairy_panel(yrng, panel, dairy_years), dom.mother_dairy(yrng, programme)],
            ignore_index=True,
        )
        surveys = surveys.sort_values(["survey_date", "subject"], kind="stable")
        tables["dairy"] = {"dairy_intake": surveys.reset_index(drop=True)}

        lrng = streams["living"]
        n_old, n_young = round(2500 * scale), round(3000 * scale)
        extra = _extra_residents(lrng, next_id, n_old, n_young, chosen[0])
        next_id += n_old + n_young
        people = pd.concat([nhi_people, ins_people, extra], ignore_index=True)
        employed = np.concatenate(
            [
                np.zeros(len(nhi_people), bool),
                np.ones(len(ins_people), bool),
                np.zeros(n_old, bool),
                np.ones(n_young, bool),
            ]
        )
        history = checkup_history(pd.concat([city_checkups, members], ignore_index=True))
        tables["city"].update(living_services(lrng, people, history, chosen, employed))

    prefix = spec.id_prefix
    resident_ids = [f"{prefix}-{i:09d}" for i in range(next_id)]
    names = np.asarray(pseudonymize_many(resident_ids, key), dtype=object)
    disposition = streams["disposition"].random(next_id)

    nodes: list[NodeManifest] = []
    for holder in sorted(tables):
        folder = out_dir / holder
        files: dict[str, str] = {}
        rows: dict[str, int] = {}
        firsts: dict[str, pd.DataFrame] = {}
        for domain, raw in tables[holder].items():
            if domain == "births":
                table = _births_table(raw, names)
                ids, dates = raw["mother_id"].to_numpy(), raw["birth_date"].to_numpy()
            else:
                table = raw.copy()
                ids = raw["subject"].to_numpy(dtype=np.int64)
                table["subject"] = names[ids]
                if "mother" in table:
                    table["mother"] = names[raw["mother"].to_numpy(dtype=np.int64)]
                dates = _record_dates(raw)
            table = table[list(get_schema(domain).names)]
            files[domain] = _write(table, folder, domain)
            rows[domain] = len(table)
            firsts[domain] = pd.DataFrame({"id": ids, "date": dates})
        consents, n_subjects = _consents(streams, names, disposition, firsts, last_date)
        folder.mkdir(parents=True, exist_ok=True)
        consents.to_csv(folder / "consents.csv", index=False, lineterminator="\n")
        nodes.append(
            NodeManifest(
                name=holder,
                description=_HOLDERS.get(holder, f"maternity facility {holder}: births"),
                files=files,
                rows=rows,
                subjects=n_subjects,
                consent_rows=len(consents),
            )
        )

    manifest = ScenarioManifest(
        preset=spec.name,
        seed=seed,
        years=chosen,
        domains=sorted({d for t in tables.values() for d in t}),
        nodes=nodes,
        lbw_targets={str(y): spec.lbw_targets[y] for y in chosen},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scenario.json").write_text(
        json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    )
    return manifest
