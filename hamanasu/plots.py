"""PNG plots of what people look at: training curves and privacy spent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["figure", "plot_forest", "plot_rates", "plot_training"]

#: Matplotlib's text and font machinery is not thread-safe: one drawing at a time (the demo
#: draws from two threads).
_DRAWING = threading.Lock()


@contextmanager
def figure(path: Path, *, dpi: int = 110, **kwargs: Any) -> Iterator[Any]:
    """Yield a new matplotlib ``Figure`` (no pyplot state), then save it to ``path`` as PNG.

    ``kwargs`` go to ``Figure`` (``figsize``). One figure is drawn at a time in a process.

    Raises:
        OSError: ``path`` cannot be written.
    """
    from matplotlib.figure import Figure

    with _DRAWING:
        fig = Figure(**kwargs)
        yield fig
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)


def plot_training(report: dict[str, Any], path: Path) -> Path:
    """Draw AUC, log-loss and accuracy per model version, and ε spent per node, into ``path``.

    Returns:
        ``path``.

    Raises:
        ValueError: the report has no rounds.
    """
    from matplotlib.ticker import MaxNLocator

    rounds = report.get("rounds") or []
    if not rounds:
        raise ValueError("the report has no rounds to plot")
    released = [r for r in rounds if r.get("metrics")]  # rounds that released an evaluation
    versions = [r["model_version"] for r in released]
    dp = (report.get("evaluation") or {}).get("dp")
    with figure(path, figsize=(13, 3.8)) as fig:
        axes = fig.subplots(1, 3)
        ax = axes[0]
        ax.plot(versions, [r["metrics"]["auc"] for r in released], marker="o", label="AUC")
        accuracy = [r["metrics"]["accuracy"] for r in released]
        ax.plot(versions, accuracy, marker="s", label="accuracy")
        ax.set_xlabel("model after round")
        ax.set_ylim(0, 1)
        noise = f"\nDP noise ε={dp['epsilon']:.2g}, σ={dp['noise_scale']:.2g} per bin" if dp else ""
        ax.set_title("Federated evaluation (held-out, all nodes)" + noise)
        ax.legend()
        ax = axes[1]
        log_loss = [r["metrics"]["log_loss"] for r in released]
        ax.plot(versions, log_loss, marker="o", color="tab:red")
        ax.set_xlabel("model after round")
        ax.set_title("Log-loss" + (" (at bin centres)" if dp else ""))
        planned = int(report.get("rounds_planned") or len(rounds))
        for ax in axes[:2]:  # one point when only the final model's evaluation is released
            ax.set_xlim(-0.3, planned + 0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax = axes[2]
        eps_by_node: dict[str, list[tuple[int, float]]] = {}
        for r in rounds:  # the final round spends too: its evaluation release is charged
            for node, eps in r["epsilon_by_node"].items():
                eps_by_node.setdefault(node, [(0, 0.0)]).append((r["round"], eps))
        for node, pts in sorted(eps_by_node.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=node)
        privacy = report.get("privacy") or {}
        if privacy.get("epsilon_target"):
            ax.axhline(privacy["epsilon_target"], color="grey", linestyle="--", label="target ε")
        ax.set_xlabel(f"rounds done ({planned + 1}: the final evaluation's release)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("Privacy spent (ε) per node")
        ax.legend(fontsize=8)
        fig.suptitle(
            f"{report.get('job_id', '')}: secure aggregation "
            f"{'on' if report.get('secure_aggregation') else 'off'}"
        )
    return path


def plot_forest(result: dict[str, Any], path: Path) -> Path:
    """Draw a forest plot of a GLM's effects (odds ratios for binomial) with 95 % CIs.

    Returns:
        ``path``.

    Raises:
        ValueError: the result has no coefficient besides the intercept.
    """
    rows = [(k, v) for k, v in result["coefficients"].items() if k != "(Intercept)"]
    if not rows:
        raise ValueError("no coefficient to plot")
    odds = result.get("family") == "binomial"
    keys = ("odds_ratio", "or_ci_low", "or_ci_high") if odds else ("estimate", "ci_low", "ci_high")
    with figure(path, figsize=(7, 0.45 * len(rows) + 1.5)) as fig:
        ax = fig.subplots()
        for i, (_name, row) in enumerate(reversed(rows)):
            est, lo, hi = (row[k] for k in keys)
            ax.plot([lo, hi], [i, i], color="tab:blue")
            ax.plot([est], [i], "o", color="tab:blue")
        ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)])
        ax.axvline(1.0 if odds else 0.0, color="grey", linestyle="--")
        if odds:
            ax.set_xscale("log")
        ax.set_xlabel("odds ratio (95 % CI)" if odds else "estimate (95 % CI)")
        ax.set_title(
            f"{result.get('job_id', '')}: federated {result.get('family', '')} GLM, "
            f"n = {result.get('n_obs', '?')}"
        )
    return path


def plot_rates(result: dict[str, Any], variable: str, path: Path) -> Path:
    """Draw a proportion per level of the first grouping variable with its 95 % CI.

    Returns:
        ``path``.

    Raises:
        ValueError: no released proportion of ``variable`` by group.
    """
    group = result["group_by"][0]
    points = []
    for cell in result["cells"]:
        level = cell["group"].get(group)
        stats = (cell.get("variables") or {}).get(variable) or {}
        if cell.get("margin") or cell.get("suppressed") or "proportion_ci" not in stats:
            continue
        if level in (None, "(all)") or any(v == "(all)" for v in cell["group"].values()):
            continue
        low, high = stats["proportion_ci"]
        points.append((level, stats["proportion"], low, high))
    if not points:
        raise ValueError(f"no released proportion of {variable!r} by {group!r}")
    points.sort()
    x = [p[0] for p in points]
    est = [100 * p[1] for p in points]
    lo = [100 * (p[1] - p[2]) for p in points]
    hi = [100 * (p[3] - p[1]) for p in points]
    with figure(path, figsize=(8, 4)) as fig:
        ax = fig.subplots()
        ax.errorbar(x, est, yerr=[lo, hi], fmt="o-", capsize=3)
        ax.set_xlabel(group)
        ax.set_ylabel(f"{variable} (%)")
        dp = result.get("dp") or {}
        note = f", DP ε={dp.get('epsilon')} ({dp.get('mode')})" if dp else ""
        ax.set_title(f"{variable} by {group}, 95 % CI{note}")
        ax.grid(alpha=0.3)
    return path
