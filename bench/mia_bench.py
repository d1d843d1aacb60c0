"""Empirical privacy audit: membership inference against the LBW model, with and without DP.

Issue 8. The scenario's births (``hokkaido`` preset, 2019: about 32,000 births over 60
facilities) are pooled as one node's data (DP is record-level per node, so one node is the
unit to audit). A random target training set (the members) is drawn, 10,000 other births
are the non-members, and the rest is the attacker's population for shadow models. For each
setting (logreg / MLP, no DP / DP-SGD at ε = 8, 3, 1 through ``federation.dp_training``),
two attacks score every member and non-member:

* loss threshold (Yeom et al. 2018): the lower the loss, the likelier a member (scored as
  the logit-scaled confidence of the true label, the same ranking as -loss);
* offline LiRA (Carlini et al. 2022): ``K`` shadow models trained the same way on random
  population samples (none contains an evaluated point, so all are "out" models); a
  point's score is where the target model's logit-scaled confidence falls in the Gaussian
  of its shadow confidences (per-point mean, global variance as for few shadows).

Reported: attack AUC (with its standard error), TPR at 0.1 % FPR (with 10,000 non-members
that is the 10 most member-like non-members), the AUC on the LBW cases alone (the rare,
most sensitive class, where leakage concentrates), the model's own test AUC (utility) and
the ε it spent. Writes ``bench/results/mia.json`` and ``bench/results/mia_roc.png``.

    .venv/bin/python bench/mia_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
DELTA = 1e-5
FPR_TARGET = 1e-3


@dataclass(frozen=True)
class Recipe:
    """How a model is trained (the target and its shadows alike)."""

    model: str
    hidden: int
    epsilon: float | None
    learning_rate: float
    batch_size: int
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.model} " + ("no DP" if self.epsilon is None else f"DP ε={self.epsilon:g}")


# -- attack machinery (also used by tests/privacy/test_membership_inference.py) -----------------


def train(recipe: Recipe, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[object, float]:
    """Train a fresh model by ``recipe`` with federation.dp_training; return it and its ε."""
    import torch

    from federation.dp_training import epsilon_spent, plan_dp, train_local
    from federation.models import build_model

    torch.manual_seed(seed)
    model = build_model(recipe.model, x.shape[1], recipe.hidden)
    plan = (
        plan_dp(len(y), recipe.batch_size, recipe.epochs, 1, recipe.epsilon, DELTA)
        if recipe.epsilon is not None
        else None
    )
    train_local(
        model,
        x,
        y,
        plan,
        max_grad_norm=1.0,
        learning_rate=recipe.learning_rate,
        batch_size=recipe.batch_size,
        local_epochs=recipe.epochs,
        seed=seed,
    )
    return model, (epsilon_spent(plan, 1) if plan else math.inf)


def confidence_logit(model: object, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return log(p_y / (1 - p_y)) of the true label: high = confident = likely member."""
    from federation.dp_training import predict_proba

    p = np.clip(predict_proba(model, x), 1e-12, 1 - 1e-12)  # type: ignore[arg-type]
    py = np.where(y == 1, p, 1 - p)
    return np.log(py) - np.log1p(-py)


def lira_offline(target: np.ndarray, shadows: np.ndarray) -> np.ndarray:
    """Return offline-LiRA scores: log P(out-confidence ≤ target's) under each point's Gaussian.

    ``shadows`` has one row per out-shadow model; the variance is pooled over points
    (Carlini et al.'s choice for few shadow models).
    """
    from scipy.stats import norm

    mu = shadows.mean(axis=0)
    sd = max(float(shadows.std(axis=0, ddof=1).mean()), 1e-6)
    return norm.logcdf(target, loc=mu, scale=sd)


def attack_metrics(scores: np.ndarray, is_member: np.ndarray) -> dict[str, float]:
    """Return AUC (and its Hanley-McNeil standard error) and TPR at 0.1 % / 1 % FPR."""
    from sklearn.metrics import roc_auc_score, roc_curve

    auc = float(roc_auc_score(is_member, scores))
    n1, n0 = int(is_member.sum()), int((~is_member.astype(bool)).sum())
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt(
        (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)
    )
    fpr, tpr, _ = roc_curve(is_member, scores)
    return {
        "auc": auc,
        "auc_se": se,
        "tpr_at_0.1%_fpr": float(tpr[fpr <= FPR_TARGET].max()),
        "tpr_at_1%_fpr": float(tpr[fpr <= 0.01].max()),
        "members": n1,
        "non_members": n0,
    }


# -- the audit --------------------------------------------------------------------------------


def scenario_births(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return the LBW job's scaled features and label over the pooled hokkaido 2019 births."""
    import pandas as pd

    from federation.plans.train import prepare_features, public_scaling
    from federation.spec import parse_job_spec
    from nodes.scenario import generate
    from nodes.sources import read_columns

    spec = parse_job_spec(
        tomllib.loads((ROOT / "examples" / "iwamizawa" / "lbw_model.toml").read_text())
    )
    manifest = generate("hokkaido", folder, seed=2017, years=[2019])
    frames = [
        read_columns(folder / n.name, spec.domain, [*spec.features, spec.label])
        for n in manifest.nodes
        if spec.domain in n.rows
    ]
    df = pd.concat(frames, ignore_index=True)
    assert spec.label is not None
    return (
        prepare_features(df, spec.features, public_scaling(spec)),
        df[spec.label].to_numpy(np.float64),
        spec.features,
    )


def recipes() -> list[Recipe]:
    """The audited settings: an overfitting MLP and a logistic regression, no DP and DP-SGD."""
    out = [Recipe("mlp", 256, None, 0.5, 32, 600), Recipe("logreg", 1, None, 0.5, 32, 100)]
    for eps in (8.0, 3.0, 1.0):
        out.append(Recipe("mlp", 256, eps, 2.0, 128, 30))
        out.append(Recipe("logreg", 1, eps, 2.0, 128, 30))
    return out


def run(n_members: int, n_non_members: int, n_shadows: int, seed: int = 0) -> dict[str, object]:
    """Run every setting's target and shadow models and both attacks; return the report."""
    import torch
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(1)  # other engineers share the machine's 2 cores
    with tempfile.TemporaryDirectory() as tmp:
        x, y, features = scenario_births(Path(tmp))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    members, non = order[:n_members], order[n_members : n_members + n_non_members]
    population = order[n_members + n_non_members :]
    evaluated = np.concatenate([members, non])
    is_member = np.concatenate([np.ones(len(members), bool), np.zeros(len(non), bool)])
    cases = y[evaluated] == 1
    report: dict[str, object] = {
        "data": {
            "preset": "hokkaido",
            "years": [2019],
            "births": len(y),
            "features": features,
            "lbw_rate": float(y.mean()),
            "members": len(members),
            "non_members": len(non),
            "population_for_shadows": len(population),
            "shadow_models": n_shadows,
            "lbw_cases_evaluated": int(cases.sum()),
        },
        "delta": DELTA,
        "settings": [],
    }
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for recipe in recipes():
        started = time.perf_counter()
        model, eps = train(recipe, x[members], y[members], seed=seed + 1)
        target = confidence_logit(model, x[evaluated], y[evaluated])
        shadow_rows = []
        for k in range(n_shadows):
            sample = np.random.default_rng(1000 + k).choice(population, n_members, replace=False)
            shadow, _ = train(recipe, x[sample], y[sample], seed=1000 + k)
            shadow_rows.append(confidence_logit(shadow, x[evaluated], y[evaluated]))
        lira = lira_offline(target, np.array(shadow_rows))
        from federation.dp_training import predict_proba

        row = {
            "setting": recipe.label,
            "model": recipe.model,
            "epsilon_target": recipe.epsilon,
            "epsilon_spent": None if math.isinf(eps) else eps,
            "recipe": {
                "hidden": recipe.hidden,
                "learning_rate": recipe.learning_rate,
                "batch_size": recipe.batch_size,
                "epochs": recipe.epochs,
            },
            "model_test_auc": float(roc_auc_score(y[non], predict_proba(model, x[non]))),  # type: ignore[arg-type]
            "model_train_auc": float(roc_auc_score(y[members], predict_proba(model, x[members]))),  # type: ignore[arg-type]
            "loss_attack": attack_metrics(target, is_member),
            "lira_offline": attack_metrics(lira, is_member),
            "loss_attack_auc_lbw_cases": float(roc_auc_score(is_member[cases], target[cases])),
            "lira_auc_lbw_cases": float(roc_auc_score(is_member[cases], lira[cases])),
            "seconds": round(time.perf_counter() - started, 1),
        }
        report["settings"].append(row)  # type: ignore[attr-defined]
        from sklearn.metrics import roc_curve

        curves[recipe.label] = {
            name: roc_curve(is_member, s)[:2] for name, s in (("loss", target), ("LiRA", lira))
        }
        la, li = row["loss_attack"], row["lira_offline"]
        print(
            f"{recipe.label:<18} ε spent {row['epsilon_spent'] or float('inf'):>5.2f}  "
            f"test AUC {row['model_test_auc']:.3f}  "
            f"loss-attack AUC {la['auc']:.3f}±{la['auc_se']:.3f} "
            f"TPR@0.1%FPR {la['tpr_at_0.1%_fpr']:.4f}  "
            f"LiRA AUC {li['auc']:.3f}±{li['auc_se']:.3f} TPR@0.1%FPR {li['tpr_at_0.1%_fpr']:.4f}  "
            f"LBW cases: loss {row['loss_attack_auc_lbw_cases']:.3f} "
            f"LiRA {row['lira_auc_lbw_cases']:.3f}  "
            f"({row['seconds']} s)",
            flush=True,
        )
    report["goal"] = _goal(report["settings"])  # type: ignore[arg-type]
    report["_curves"] = curves
    return report


def _goal(settings: list[dict[str, object]]) -> dict[str, object]:
    """Check issue 8's goal: AUC ≤ 0.55 at ε ≤ 8, and clearly higher without DP."""
    dp = [s for s in settings if s["epsilon_target"] is not None]
    nodp = [s for s in settings if s["epsilon_target"] is None]
    worst_dp = max(max(s["loss_attack"]["auc"], s["lira_offline"]["auc"]) for s in dp)  # type: ignore[index]
    best_nodp = max(max(s["loss_attack"]["auc"], s["lira_offline"]["auc"]) for s in nodp)  # type: ignore[index]
    return {
        "max_attack_auc_with_dp": worst_dp,
        "max_attack_auc_without_dp": best_nodp,
        "dp_auc_at_most_0.55": worst_dp <= 0.55,
        "no_dp_clearly_higher": best_nodp > worst_dp + 0.02,
    }


def plot(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> None:
    """Write ROC curves (log-log, as for low-FPR membership inference) of every setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), sharey=True)
    for ax, model in zip(axes, ("mlp", "logreg"), strict=True):
        for label, by_attack in curves.items():
            if not label.startswith(model):
                continue
            for attack, style in (("LiRA", "-"), ("loss", ":")):
                fpr, tpr = by_attack[attack]
                ax.plot(
                    np.maximum(fpr, 1e-5), np.maximum(tpr, 1e-5), style, label=f"{label}, {attack}"
                )
        ax.plot([1e-5, 1], [1e-5, 1], color="grey", lw=0.8)
        ax.axvline(FPR_TARGET, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-4, 1)
        ax.set_ylim(1e-4, 1)
        ax.set_xlabel("false-positive rate")
        ax.set_title(f"membership inference, LBW {model}")
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("true-positive rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 shadow models, 5,000 non-members")
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--shadows", type=int, default=8)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    report = run(args.members, 5000 if args.quick else 10_000, 2 if args.quick else args.shadows)
    curves = report.pop("_curves")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "mia_quick" if args.quick else "mia"
    plot(curves, RESULTS / f"{name}_roc.png")  # type: ignore[arg-type]
    report["plot"] = f"{name}_roc.png"
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report["goal"], indent=2))
    print(
        f"wrote {RESULTS / (name + '.json')} and {RESULTS / (name + '_roc.png')} "
        f"in {report['wall_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
