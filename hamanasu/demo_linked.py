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

from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

__all__ = ["answer_prepregnancy_hdp", "run_linked_questions"]

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nodes.scenario.linked_views import CHECKUP_AGES

    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_linked_questions(data: Path, out: Path, console: Console) -> dict[str, Any]:
    """Answer the cross-holder questions over the scenario in ``data``; plots into ``out``.

    Returns:
        ``{"dairy_supplements_lbw": GLM result, "infant_growth": statistics result,
        "pre_pregnancy_checkups_hdp": GLM result}`` (failures as ``status``/``reason``).
    """
    from federation.analytics.stats import stats_finalize, stats_layout
    from federation.linkage.errors import LinkageError
    from federation.linkage.linked_run import HolderTable, linked_glm, linked_stats
    from federation.spec import parse_job_spec
    from hamanasu.plots import plot_forest
    from nodes.scenario import linked_views as views

    births = views.births_by_mother(_table(data / "city-hospital", "births"))
    report: dict[str, Any] = {}
    holders = [
        HolderTable("city-hospital", births[["subject", "lbw", *Q1_TERMS[:3]]]),
        HolderTable("dairy", views.pregnancy_dairy(_table(data / "dairy", "dairy_intake"))),
        HolderTable("drugstore",
                    views.pregnancy_supplements(_table(data / "drugstore", "purchases"))),
    ]
    with console.status("question 1: LBW ~ hospital covariates + dairy + supplements (PSI + MPC)"):
        try:
            q1 = linked_glm(holders, key="subject", outcome="lbw", terms=Q1_TERMS,
                            family="binomial", ranges=Q1_RANGES)
            q1["status"] = "succeeded"
            plot_forest(q1, out / "linked_lbw_forest.png")
            q1["plot"] = "linked_lbw_forest.png"
        except LinkageError as exc:
            q1 = {"status": "failed", "reason": str(exc)}
    report["dairy_supplements_lbw"] = q1
    if q1["status"] == "succeeded":
        ors = {k: v["odds_ratio"] for k, v in q1["coefficients"].items() if k != "Intercept"}
        console.print(f"[bold]Q1[/] linked n={q1['linked_n']}: odds ratios "
                      + ", ".join(f"{k} {v:.3f}" for k, v in ors.items()))
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
            q2 = stats_finalize(vec, stats_layout(spec), spec, 10).to_json_dict()
            q2.update(status="succeeded", linked_n=linked_n, holders=who)
            _plot_growth(q2, out / "linked_growth.png")
            q2["plot"] = "linked_growth.png"
            console.print(f"[bold]Q2[/] linked n={linked_n}: growth by birth-weight group "
                          f"→ {out / 'linked_growth.png'}")
        except LinkageError as exc:
            q2 = {"status": "failed", "reason": str(exc)}
    report["infant_growth"] = q2
    report["pre_pregnancy_checkups_hdp"] = answer_prepregnancy_hdp(data, out, console)
    return report


def answer_prepregnancy_hdp(data: Path, out: Path, console: Console) -> dict[str, Any]:
    """Fit HDP (hospital) on pre-pregnancy blood pressure and BMI (insurer), linked; plot.

    Returns:
        The linked GLM result with ``status`` ``succeeded`` and ``plot`` (a forest plot of
        the odds ratios in ``out``), or ``status`` ``failed`` and ``reason``.
    """
    from federation.linkage.errors import LinkageError
    from federation.linkage.linked_run import HolderTable, linked_glm
    from hamanasu.plots import plot_forest
    from nodes.scenario import linked_views as views

    births = views.births_by_mother(_table(data / "city-hospital", "births"))
    holders = [
        HolderTable("city-hospital", births[["subject", "hdp", "maternal_age"]]),
        HolderTable("insurer", views.prepregnancy_checkup(_table(data / "insurer", "checkups"))),
    ]
    with console.status("question 3: HDP ~ pre-pregnancy blood pressure + BMI (PSI + MPC)"):
        try:
            q3 = linked_glm(holders, key="subject", outcome="hdp", terms=Q3_TERMS,
                            family="binomial", ranges=Q3_RANGES)
        except LinkageError as exc:
            return {"status": "failed", "reason": str(exc)}
    q3["status"] = "succeeded"
    plot_forest(q3, out / "linked_hdp_forest.png")
    q3["plot"] = "linked_hdp_forest.png"
    ors = {k: v["odds_ratio"] for k, v in q3["coefficients"].items() if k != "Intercept"}
    console.print(f"[bold]Q3[/] linked n={q3['linked_n']}: odds ratios of HDP "
                  + ", ".join(f"{k} {v:.3f}" for k, v in ors.items()))
    return q3
