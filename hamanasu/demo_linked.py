"""The demo's cross-holder questions, as linked jobs over the scenario's holders.

1. Adjusted odds ratios of low birth weight on the hospital's covariates plus the
   mother's dairy intake in pregnancy (the dairy partner's survey) and her supplement
   purchases (the drugstore): a linked logistic GLM over three holders.
2. Growth of low-birth-weight and normal-weight infants at the city's 4/10/18/36-month
   checkups: linked statistics joining hospital births to the city's infant checkups.
3. Hypertensive disorders of pregnancy at the hospital against the mother's blood
   pressure and BMI at the insurer's workplace checkups before pregnancy: a linked
   logistic GLM over two holders (plus the helper party).

Each holder shapes its own records into one row per resident first
(:mod:`nodes.scenario.linked_views`); alignment is PSI and the computation MPC
(:mod:`federation.linkage.linked_run`), with the demo playing the helper party.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.text import Text

__all__ = [
    "answer_dairy_supplements_lbw",
    "answer_infant_growth",
    "answer_prepregnancy_hdp",
    "run_linked_questions",
]

Q1_TERMS = ["maternal_age", "bmi_pre", "smoking", "dairy_g", "supplement"]
Q1_RANGES = {"maternal_age": (14.0, 50.0), "bmi_pre": (12.0, 50.0), "smoking": (0.0, 1.0),
             "dairy_g": (0.0, 1500.0), "supplement": (0.0, 1.0)}

Q3_TERMS = ["maternal_age", "checkup_sbp_10", "checkup_bmi"]
Q3_RANGES = {"maternal_age": (14.0, 50.0), "checkup_sbp_10": (8.0, 20.0),
             "checkup_bmi": (12.0, 50.0)}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _table(folder: Path, domain: str) -> pd.DataFrame:
    from nodes.sources import find_table

    return _read(find_table(folder, domain))


def _plot_growth(released: dict[str, Any], path: Path) -> Path:
    from hamanasu.plots import figure
    from nodes.scenario.linked_views import CHECKUP_AGES

    with figure(path, dpi=120, figsize=(6, 4)) as fig:
        ax = fig.subplots()
        for group in ("lbw", "normal"):
            cell = next(c for c in released["cells"] if c["group"].get("bw_group") == group)
            ages, means, lo, hi = [], [], [], []
            for age in CHECKUP_AGES:
                v = (cell.get("variables") or {}).get(f"weight_kg_{age}m") or {}
                if "mean" in v and "mean_ci" in v:
                    ages.append(age)
                    means.append(v["mean"])
                    lo.append(v["mean"] - v["mean_ci"][0])
                    hi.append(v["mean_ci"][1] - v["mean"])
            ax.errorbar(ages, means, yerr=[lo, hi], marker="o", capsize=3,
                        label="low birth weight" if group == "lbw" else "normal birth weight")
        ax.set_xlabel("age at the city's checkup (months)")
        ax.set_ylabel("mean weight (kg), 95 % CI")
        ax.set_title("Infant growth by birth-weight group (linked: hospital x city)")
        ax.legend()
    return path


def run_linked_questions(data: Path, out: Path, console: Console) -> dict[str, Any]:
    """Answer the cross-holder questions over the scenario in ``data``; plots into ``out``.

    The three questions run at once (PSI runs in C++ without the GIL, each MPC party is a
    process of its own, and an MPC round mostly waits on the others); what each prints
    is shown in question order once all have finished.

    Returns:
        ``{"dairy_supplements_lbw": GLM result, "infant_growth": statistics result,
        "pre_pregnancy_checkups_hdp": GLM result}`` (failures as ``status``/``reason``).
    """
    questions = {
        "dairy_supplements_lbw": answer_dairy_supplements_lbw,
        "infant_growth": answer_infant_growth,
        "pre_pregnancy_checkups_hdp": answer_prepregnancy_hdp,
    }
    said = {key: Console(file=io.StringIO(), record=True, width=console.width)
            for key in questions}
    with ThreadPoolExecutor(max_workers=len(questions), thread_name_prefix="linked") as pool:
        running = {key: pool.submit(answer, data, out, said[key])
                   for key, answer in questions.items()}
    report = {key: job.result() for key, job in running.items()}
    for key in questions:
        text = said[key].export_text(styles=True)
        if text:
            console.print(Text.from_ansi(text.rstrip("\n")))
    return report


def answer_dairy_supplements_lbw(data: Path, out: Path, console: Console) -> dict[str, Any]:
    """Fit LBW (hospital) on the mother's dairy intake and supplements, linked; plot.

    Returns:
        The linked GLM result with ``status`` ``succeeded`` and ``plot``, or ``status``
        ``failed`` and ``reason``.
    """
    from federation.linkage.linked_run import HolderTable
    from nodes.scenario import linked_views as views

    births = views.births_by_mother(_table(data / "city-hospital", "births"))
    holders = [
        HolderTable("city-hospital", births[["subject", "lbw", *Q1_TERMS[:3]]]),
        HolderTable("dairy", views.pregnancy_dairy(_table(data / "dairy", "dairy_intake"))),
        HolderTable("drugstore",
                    views.pregnancy_supplements(_table(data / "drugstore", "purchases"))),
    ]
    return _odds_ratios(holders, "lbw", Q1_TERMS, Q1_RANGES, out, console, (
        "question 1: LBW ~ hospital covariates + dairy + supplements (PSI + MPC)",
        "linked_lbw_forest.png", "[bold]Q1[/] linked n={n}: odds ratios "))


def _odds_ratios(holders: list[Any], outcome: str, terms: list[str],
                 ranges: dict[str, tuple[float, float]], out: Path, console: Console,
                 texts: tuple[str, str, str]) -> dict[str, Any]:
    """Fit a linked logistic GLM, plot its odds ratios and print them.

    ``texts`` are the status line, the plot's file name and the printed line's start.
    """
    from federation.linkage.errors import LinkageError
    from federation.linkage.linked_run import linked_glm
    from hamanasu.plots import plot_forest

    status, plot, said = texts
    with console.status(status):
        try:
            fit = linked_glm(holders, key="subject", outcome=outcome, terms=terms,
                             family="binomial", ranges=ranges)
        except LinkageError as exc:
            return {"status": "failed", "reason": str(exc)}
    fit["status"] = "succeeded"
    plot_forest(fit, out / plot)
    fit["plot"] = plot
    ors = {k: v["odds_ratio"] for k, v in fit["coefficients"].items() if k != "Intercept"}
    console.print(said.format(n=fit["linked_n"])
                  + ", ".join(f"{k} {v:.3f}" for k, v in ors.items()))
    return fit


def answer_infant_growth(data: Path, out: Path, console: Console) -> dict[str, Any]:
    """Release infant growth at the city's checkups by birth-weight group, linked; plot.

    Returns:
        The released statistics with ``status`` ``succeeded``, ``linked_n``, ``holders``
        and ``plot``, or ``status`` ``failed`` and ``reason``.
    """
    from federation.analytics.stats import stats_finalize, stats_layout
    from federation.linkage.errors import LinkageError
    from federation.linkage.linked_run import HolderTable, linked_stats
    from federation.spec import parse_job_spec
    from nodes.scenario import linked_views as views

    births = views.births_by_mother(_table(data / "city-hospital", "births"))
    growth_vars = [f"{m}_{a}m" for a in views.CHECKUP_AGES for m in ("weight_kg", "length_cm")]
    spec = parse_job_spec({
        "kind": "stats", "link": {"key": "mother"},
        "stats": {"measures": ["count", "mean", "variance"], "group_by": ["bw_group"],
                  "levels": {"bw_group": ["lbw", "normal"]}, "variables": growth_vars,
                  "min_cell_count": 10},
    })
    growth_holders = [
        HolderTable("city-hospital", births[["mother", "bw_group"]]),
        HolderTable("city", views.infant_growth(_table(data / "city", "infant_checkups"))),
    ]
    with console.status("question 2: infant growth by birth-weight group (PSI + MPC)"):
        try:
            vec, linked_n, who = linked_stats(
                growth_holders, key="mother", group_by=["bw_group"],
                levels={"bw_group": ["lbw", "normal"]}, variables=growth_vars)
        except LinkageError as exc:
            return {"status": "failed", "reason": str(exc)}
    q2: dict[str, Any] = stats_finalize(vec, stats_layout(spec), spec, 10).to_json_dict()
    q2.update(status="succeeded", linked_n=linked_n, holders=who)
    _plot_growth(q2, out / "linked_growth.png")
    q2["plot"] = "linked_growth.png"
    console.print(f"[bold]Q2[/] linked n={linked_n}: growth by birth-weight group "
                  f"→ {out / 'linked_growth.png'}")
    return q2


def answer_prepregnancy_hdp(data: Path, out: Path, console: Console) -> dict[str, Any]:
    """Fit HDP (hospital) on pre-pregnancy blood pressure and BMI (insurer), linked; plot.

    Returns:
        The linked GLM result with ``status`` ``succeeded`` and ``plot`` (a forest plot of
        the odds ratios in ``out``), or ``status`` ``failed`` and ``reason``.
    """
    from federation.linkage.linked_run import HolderTable
    from nodes.scenario import linked_views as views

    births = views.births_by_mother(_table(data / "city-hospital", "births"))
    holders = [
        HolderTable("city-hospital", births[["subject", "hdp", "maternal_age"]]),
        HolderTable("insurer", views.prepregnancy_checkup(_table(data / "insurer", "checkups"))),
    ]
    return _odds_ratios(holders, "hdp", Q3_TERMS, Q3_RANGES, out, console, (
        "question 3: HDP ~ pre-pregnancy blood pressure + BMI (PSI + MPC)",
        "linked_hdp_forest.png", "[bold]Q3[/] linked n={n}: odds ratios of HDP "))
