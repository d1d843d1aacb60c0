"""The Iwamizawa demo: generate the scenario, then run the consortium's questions end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["EXAMPLES", "run_demo"]

#: The scenario's job specs, shipped beside the code.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "iwamizawa"

MATERNITY = ("city-hospital", "women-clinic")


def _load_example(name: str, **overrides: Any) -> Any:
    import tomllib

    from federation.spec import parse_job_spec

    data = tomllib.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    return parse_job_spec(data)


def _training_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['job_id']}: federated LBW model (held-out, all nodes)")
    for col in ("model after round", "AUC", "accuracy", "log-loss", "ECE", "n", "s"):
        table.add_column(col, justify="right")
    for r in report["rounds"]:
        m = r["metrics"]
        table.add_row(str(r["model_version"]), f"{m['auc']:.3f}", f"{m['accuracy']:.3f}",
                      f"{m['log_loss']:.3f}", f"{m['ece']:.3f}", str(m["n"]), f"{r['seconds']:.2f}")
    return table


def run_demo(out: Path, seed: int = 2017, rounds: int = 5, epsilon: float = 3.0) -> dict[str, Any]:
    """Generate the ``iwamizawa`` scenario under ``out/data`` and run the demo's jobs.

    Writes ``out/report.json`` and PNG plots beside it.

    Returns:
        The report.
    """
    from hamanasu.plots import plot_training
    from hamanasu.progress import round_progress
    from hamanasu.training_run import run_training_job
    from nodes.scenario import generate
    from nodes.sources import NodeSource, read_columns

    console = Console()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with console.status("generating the synthetic Iwamizawa scenario"):
        manifest = generate("iwamizawa", out / "data", seed=seed)
    console.print(
        f"[bold]Iwamizawa scenario[/]: {len(manifest.nodes)} holders, years "
        f"{manifest.years[0]}–{manifest.years[-1]}, seed {seed} → {out / 'data'}"
    )
    spec = _load_example("lbw_model.toml", rounds=rounds, **{"privacy.epsilon": epsilon})
    nodes = [NodeSource(name, out / "data" / name, out / "nodes" / name) for name in MATERNITY]
    sizes = {n.name: len(read_columns(n.data, spec.domain, spec.columns())) for n in nodes}
    with round_progress(spec.rounds + 1, "training the LBW model (DP-SGD + SecAgg+)") as advance:
        run = run_training_job(spec, nodes, job_id="demo-lbw", max_records=max(sizes.values()), on_round=advance)
    run.node_sizes = sizes
    training = run.report()
    if training["status"] != "succeeded":
        console.print(f"[red]training failed:[/] {training['reason']}")
    else:
        console.print(_training_table(training))
        plot_training(training, out / "training.png")
        training["plot"] = "training.png"
        eps = training["privacy"]["epsilon_spent_by_node"]
        console.print(
            "ε spent per node: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(eps.items()))
            + f" (target {spec.privacy.epsilon if spec.privacy else '-'}, δ {spec.privacy.delta if spec.privacy else '-'})"
        )
    report: dict[str, Any] = {
        "scenario": {"preset": manifest.preset, "seed": seed, "years": manifest.years,
                     "holders": [n.name for n in manifest.nodes]},
        "training": training,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    console.print(f"wrote {out / 'report.json'} and {out / 'training.png'} in {report['wall_seconds']:.1f} s")
    return report
