"""The Iwamizawa demo: generate the scenario, then run the consortium's questions end to end."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
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
        if not m:  # a round that released no evaluation
            continue
        table.add_row(
            str(r["model_version"]),
            f"{m['auc']:.3f}",
            f"{m['accuracy']:.3f}",
            f"{m['log_loss']:.3f}",
            f"{m['ece']:.3f}",
            str(m["n"]),
            f"{r['seconds']:.2f}",
        )
    return table


def _set_up_nodes(out: Path, console: Console) -> dict[str, Any]:
    """Initialise each maternity node (key, policy), import its consents; return its gate."""
    import shutil

    from nodes.cli import import_consents, init_node
    from nodes.enforcement import EnforcementPoint

    points: dict[str, Any] = {}
    for name in MATERNITY:
        folder = out / "nodes" / name
        shutil.rmtree(folder, ignore_errors=True)
        init_node(folder, name, EXAMPLES / "policies" / f"{name}.toml")
        point = EnforcementPoint(name, folder)
        count = import_consents(point, out / "data" / name / "consents.csv")
        console.print(
            f"node [bold]{name}[/]: key 0600, policy {name}.toml, {count} consent versions imported"
        )
        points[name] = point
    return points


def _commercial_request(points: dict[str, Any], console: Console) -> dict[str, Any]:
    """Ask every maternity node to accept a commercial job; report who refused and why."""
    from nodes.enforcement import JobRefused

    spec = _load_example("commercial_model.toml")
    outcome: dict[str, Any] = {"job": spec.name, "requester": spec.purpose.requester, "nodes": {}}
    for name, point in points.items():
        decision = point.review(spec, "commercial-request")
        outcome["nodes"][name] = {
            "outcome": decision.outcome,
            "reasons": [{"code": r.code, "message": r.message} for r in decision.reasons],
        }
        if decision.outcome == "deny":
            reasons = "; ".join(f"{r.code}: {r.message}" for r in decision.reasons)
            console.print(f"[yellow]refused[/] by {name}: {reasons}")
        else:
            console.print(f"{name}: {decision.outcome}")
    accepted = [n for n, v in outcome["nodes"].items() if v["outcome"] == "allow"]
    outcome["ran"] = len(accepted) >= spec.min_nodes
    outcome["why_not_run"] = (
        None
        if outcome["ran"]
        else f"{len(accepted)} node(s) accepted; the job needs {spec.min_nodes}"
    )
    _ = JobRefused  # refusals at round time arrive as JobRefused; here the policy refuses up front
    return outcome


def _rates_by_year(
    out: Path, nodes: list[Any], points: dict[str, Any], sizes: dict[str, int], console: Console
) -> dict[str, Any]:
    """LBW rate by year with CIs, under distributed DP and cell suppression; print the table."""
    from hamanasu.analytics_run import run_stats_job

    spec = _load_example("lbw_rate_by_year.toml")
    job_id = f"rates-{int(time.time())}"
    min_cells = 0
    for point in points.values():
        point.accept(spec, job_id)
        min_cells = max(min_cells, point.policy().min_cell_count)
    with console.status("LBW rate by year (one SecAgg+ round, distributed DP)"):
        result = run_stats_job(
            spec,
            nodes,
            job_id=job_id,
            out=out,
            sizes=sizes,
            gates=dict(points),
            show=False,
            min_cell_count=min_cells,
        )
    for point in points.values():
        point.release(job_id, f"job {result['status']}", failed=result["status"] != "succeeded")
    if result["status"] != "succeeded":
        console.print(f"[red]statistics failed:[/] {result['reason']}")
        return result
    dp = result["dp"] or {}
    table = Table(
        title=f"LBW rate by year (DP ε = {dp.get('epsilon')} per node, {dp.get('mode')}; 95 % CI)"
    )
    for col in ("year", "births", "LBW %", "95 % CI"):
        table.add_column(col, justify="right")
    for cell in result["cells"]:
        lbw = (cell.get("variables") or {}).get("lbw") or {}
        if cell.get("suppressed") or "proportion" not in lbw:
            table.add_row(str(cell["group"]["year"]), "suppressed", "", "")
            continue
        low, high = lbw["proportion_ci"]
        table.add_row(
            str(cell["group"]["year"]),
            f"{cell['n']:.0f}",
            f"{100 * lbw['proportion']:.1f}",
            f"{100 * low:.1f}–{100 * high:.1f}",
        )
    console.print(table)
    return result


def _adjusted_odds_ratios(
    out: Path, nodes: list[Any], points: dict[str, Any], sizes: dict[str, int], console: Console
) -> dict[str, Any]:
    """Fit the adjusted LBW odds ratios by exact federated logistic regression; print the table."""
    from hamanasu.analytics_run import run_glm_job
    from hamanasu.plots import plot_forest
    from hamanasu.progress import round_progress

    spec = _load_example("lbw_glm.toml")
    job_id = f"glm-{int(time.time())}"
    for point in points.values():
        point.accept(spec, job_id)
    with round_progress(
        spec.glm.max_iterations + 1, "adjusted odds ratios (Newton over SecAgg+)"
    ) as advance:
        result = run_glm_job(
            spec,
            nodes,
            job_id=job_id,
            max_records=max(sizes.values()),
            gates=dict(points),
            on_round=advance,
        )
    if result["status"] != "succeeded":
        console.print(f"[red]regression failed:[/] {result['reason']}")
        return result
    table = Table(
        title=f"Adjusted odds ratios for LBW (n = {result['n_obs']}, "
        f"{result['iterations']} Newton steps)"
    )
    for col in ("term", "OR", "95 % CI", "p"):
        table.add_column(col, justify="right")
    for term, row in result["coefficients"].items():
        if term != "(Intercept)":
            table.add_row(
                term,
                f"{row['odds_ratio']:.2f}",
                f"{row['or_ci_low']:.2f}–{row['or_ci_high']:.2f}",
                f"{row['p_value']:.2g}",
            )
    console.print(table)
    plot_forest(result, out / "odds_ratios.png")
    result["plot"] = "odds_ratios.png"
    return result


def _ledger_summary(point: Any, job_id: str) -> dict[str, Any]:
    """Return the usage entries of a job in a node's ledger and its signed head."""
    ledger = point.ledger()
    usage = [
        e.payload for e in ledger.entries(kind="job.usage") if e.payload.get("job_id") == job_id
    ]
    head = ledger.sign_head()
    return {
        "usage": [
            {k: u[k] for k in ("round", "n_subjects", "subject_commitment", "epsilon")}
            for u in usage
        ],
        "head": {"tree_size": head.tree_size, "root": head.root_hash},
    }


def run_demo(out: Path, seed: int = 2017, rounds: int = 5, epsilon: float = 3.0) -> dict[str, Any]:
    """Generate the ``iwamizawa`` scenario under ``out/data`` and run the demo's jobs.

    Writes ``out/report.json`` and PNG plots beside it.

    Returns:
        The report.
    """
    from hamanasu.demo_linked import run_linked_questions
    from nodes.scenario import generate

    console = Console()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with console.status("generating the synthetic Iwamizawa scenario"):
        manifest = generate("iwamizawa", out / "data", seed=seed)
    console.print(
        f"[bold]Iwamizawa scenario[/]: {len(manifest.nodes)} holders, years "
        f"{manifest.years[0]}–{manifest.years[-1]}, seed {seed} → {out / 'data'}"
    )
    # The linked questions (PSI in C++, MPC parties in processes of their own) need only
    # the generated files: they run beside the horizontal jobs, which keep this thread, and
    # their output is shown after them, in the same order as ever.
    linked_out = Console(file=io.StringIO(), record=True, width=console.width)
    lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-linked")
    linked_job = lane.submit(_in_background, run_linked_questions, out / "data", out, linked_out)
    try:
        horizontal = _horizontal_jobs(out, console, rounds, epsilon)
    except BaseException:
        wait_for([linked_job])
        raise
    finally:
        lane.shutdown(wait=False)
    linked = _linked_answers(linked_job, linked_out, console)
    report: dict[str, Any] = {
        "scenario": {
            "preset": manifest.preset,
            "seed": seed,
            "years": manifest.years,
            "holders": [n.name for n in manifest.nodes],
        },
        **horizontal,
        "linked": linked,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    console.print(
        f"wrote {out / 'report.json'} and {out / 'training.png'} in {report['wall_seconds']:.1f} s"
    )
    return report


#: How much lower the linked questions' lane runs: the horizontal jobs' SecAgg+ stages
#: wait at most 30 s for a reply, so they keep the CPU first when the machine is busy.
BACKGROUND_NICE = 10


def _in_background(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in this thread at :data:`BACKGROUND_NICE`; return its result.

    On Linux the nice value is per thread and what this thread starts (threads, MPC
    party processes) inherits it; elsewhere the priority is left alone.
    """
    if sys.platform == "linux":
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid,
                           os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE)
    return fn(*args)


def _linked_answers(job: Future[dict[str, Any]], recorded: Console,
                    console: Console) -> dict[str, Any]:
    """Wait for the linked questions; print what they printed; return their answers."""
    from rich.text import Text

    answers = job.result()
    console.print(Text.from_ansi(recorded.export_text(styles=True)))
    return answers


def _horizontal_jobs(out: Path, console: Console, rounds: int,
                     epsilon: float) -> dict[str, Any]:
    """Set up the maternity nodes and run the refusal, training, rates and GLM jobs.

    Returns:
        The report's ``refusal``, ``training``, ``lbw_rate_by_year`` and
        ``adjusted_odds_ratios`` entries.
    """
    import torch

    from hamanasu.plots import plot_training
    from hamanasu.progress import round_progress
    from hamanasu.training_run import run_training_job
    from nodes.sources import NodeSource, read_columns

    # The models are small: one thread per node's step leaves the other core to the
    # linked questions instead of contending for it.
    torch.set_num_threads(1)
    points = _set_up_nodes(out, console)
    refusal = _commercial_request(points, console)
    spec = _load_example("lbw_model.toml", rounds=rounds, **{"privacy.epsilon": epsilon})
    nodes = [NodeSource(name, out / "data" / name, out / "nodes" / name) for name in MATERNITY]
    sizes = {n.name: len(read_columns(n.data, spec.domain, spec.columns())) for n in nodes}
    job_id = f"lbw-{int(time.time())}"
    for point in points.values():
        point.accept(spec, job_id)
    with round_progress(spec.rounds + 1, "training the LBW model (DP-SGD + SecAgg+)") as advance:
        run = run_training_job(
            spec,
            nodes,
            job_id=job_id,
            max_records=max(sizes.values()),
            gates=dict(points),
            on_round=advance,
        )
    for point in points.values():
        point.release(
            job_id,
            f"job {run.outcome.status}: {run.outcome.reason or ''}",
            failed=run.outcome.status != "succeeded",
        )
    run.node_sizes = sizes
    training = run.report()
    if training["status"] != "succeeded":
        console.print(f"[red]training failed:[/] {training['reason']}")
    else:
        console.print(_training_table(training))
        dp = (training.get("evaluation") or {}).get("dp")
        if dp:
            console.print(
                f"evaluation of the final model: histograms on "
                f"{training['evaluation']['bins']} bins, distributed DP noise "
                f"(σ {dp['noise_scale']:.2f} per bin, ε {dp['epsilon_charged_per_node']:.3f} "
                "of each node's total)"
            )
        plot_training(training, out / "training.png")
        training["plot"] = "training.png"
        eps = training["privacy"]["epsilon_spent_by_node"]
        console.print(
            "ε spent per node: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(eps.items()))
            + (f" (target {spec.privacy.epsilon}, δ {spec.privacy.delta})" if spec.privacy else "")
        )
    training["ledger"] = {name: _ledger_summary(p, job_id) for name, p in points.items()}
    rates = _rates_by_year(out, nodes, points, sizes, console)
    glm = _adjusted_odds_ratios(out, nodes, points, sizes, console)
    return {
        "refusal": refusal,
        "training": training,
        "lbw_rate_by_year": rates,
        "adjusted_odds_ratios": glm,
    }
