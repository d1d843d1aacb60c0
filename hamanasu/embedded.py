"""``hamanasu simulate`` and ``hamanasu demo``: embedded runs on one machine.

``simulate`` runs any job spec over node data given as files, so a researcher can try a
job on sample data before submitting it. ``demo`` generates the Iwamizawa scenario and
runs the consortium's questions end to end.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from hamanasu.errors import UsageError

__all__ = ["parse_node_args", "register", "run_simulation_job"]


def parse_node_args(values: list[str]) -> list[tuple[str, Path]]:
    """Parse ``NAME=PATH`` options into (name, path) pairs.

    Returns:
        The pairs, in the order given.

    Raises:
        UsageError: a value is not NAME=PATH, a name repeats, or a path does not exist.
    """
    out: list[tuple[str, Path]] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--node: expected NAME=PATH, got {value!r}")
        if any(name == n for n, _ in out):
            raise UsageError(f"--node: node {name!r} given twice")
        p = Path(path)
        if not p.exists():
            raise UsageError(f"--node {name}: {path} does not exist")
        out.append((name, p))
    return out


def _preflight(spec: Any, nodes: list[Any]) -> dict[str, int]:
    """Check every node's data against the job before anything runs.

    Returns:
        Each node's row count.

    Raises:
        UsageError: unknown feature or label, a non-binary label, or invalid data.
    """
    from nodes.data_loading import DataValidationError, read_header
    from nodes.mapping import is_mapping_file, load_mapping
    from nodes.sources import find_table, read_columns

    sizes: dict[str, int] = {}
    for node in nodes:
        try:
            path = find_table(node.data, spec.domain)
            if is_mapping_file(path):  # the holder's database, read through its mapping
                header = list(load_mapping(path).domain(spec.domain).columns)
            else:
                header = read_header(path)
        except (FileNotFoundError, DataValidationError, ValueError) as exc:
            raise UsageError(f"--node {node.name}: {exc}") from None
        except KeyError as exc:
            raise UsageError(f"--node {node.name}: {str(exc).strip(chr(34) + chr(39))}") from None
        for field, names in (
            ("features", spec.features),
            ("label", [spec.label] if spec.label else []),
        ):
            unknown = [c for c in names if c not in header]
            if unknown:
                raise UsageError(f"{field}: {unknown} not in node {node.name}'s data ({path.name})")
        try:
            frame = read_columns(node.data, spec.domain, spec.columns())
        except DataValidationError as exc:
            raise UsageError(f"--node {node.name}: {exc}") from None
        except (KeyError, ValueError) as exc:
            raise UsageError(str(exc).strip("'\"")) from None
        if spec.kind == "train" and spec.label:
            values = set(frame[spec.label].dropna().unique().tolist())
            if not values <= {0, 1}:
                raise UsageError(
                    f"label: {spec.label!r} is not binary at node {node.name} "
                    f"(values {sorted(values)[:5]})"
                )
        sizes[node.name] = len(frame)
    if spec.kind == "glm":
        from federation.analytics.design import DesignError
        from federation.analytics.glm_round import glm_extra_bounds, glm_term_bounds
        from federation.cdm import declared_ranges

        try:
            glm_term_bounds(spec, declared_ranges(spec.domain))
            glm_extra_bounds(spec, declared_ranges(spec.domain))
        except DesignError as exc:
            raise UsageError(str(exc)) from None
    return sizes


def run_simulation_job(
    spec: Any,
    node_args: list[tuple[str, Path]],
    out: Path,
    job_id: str | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """Run ``spec`` over the given nodes' files and write ``result.json`` (and a plot) to ``out``.

    Returns:
        The result written.

    Raises:
        UsageError: bad nodes or data for this job.
    """
    from nodes.sources import NodeSource

    nodes = [NodeSource(name, path) for name, path in node_args]
    if spec.link is not None:
        from hamanasu.linked_job import run_linked_job

        out.mkdir(parents=True, exist_ok=True)
        result = run_linked_job(spec, nodes, out)
        (out / "result.json").write_text(json.dumps(result, indent=2, default=float), "utf-8")
        return result
    if len(nodes) < spec.min_nodes:
        raise UsageError(f"min_nodes: the job needs {spec.min_nodes} nodes, {len(nodes)} given")
    sizes = _preflight(spec, nodes)
    job_id = job_id or f"sim-{uuid.uuid4().hex[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    if spec.kind == "train":
        result = _run_train(spec, nodes, sizes, job_id, out, show)
    else:
        from hamanasu.analytics_run import run_analytics_job

        result = run_analytics_job(spec, nodes, job_id=job_id, out=out, show=show)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
    return result


def _run_train(
    spec: Any, nodes: list[Any], sizes: dict[str, int], job_id: str, out: Path, show: bool
) -> dict[str, Any]:
    from hamanasu.plots import plot_training
    from hamanasu.progress import round_progress
    from hamanasu.training_run import run_training_job

    with round_progress(spec.rounds + 1, f"training {spec.name}", enabled=show) as advance:
        run = run_training_job(
            spec, nodes, job_id=job_id, max_records=max(sizes.values()), on_round=advance
        )
    run.node_sizes = sizes
    report = run.report()
    if run.parameters is not None:
        report["parameters"] = [p.tolist() for p in run.parameters]
    if report["rounds"]:
        plot_training(report, out / "training.png")
        report["plot"] = "training.png"
    return report


def simulate(
    job: Annotated[Path, typer.Argument(help="Job spec (TOML or JSON).")],
    node: Annotated[
        list[str],
        typer.Option("--node", help="NAME=PATH of a node's data file or folder; repeat per node."),
    ],
    out: Annotated[Path, typer.Option(help="Folder for result.json and plots.")] = Path(
        "simulate-output"
    ),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Run a job over node data given as files, as a dry run before submitting it."""
    from federation.errors import JobSpecError
    from federation.spec import load_job_spec

    try:
        spec = load_job_spec(job)
    except JobSpecError as exc:
        raise UsageError(str(exc)) from None
    result = run_simulation_job(spec, parse_node_args(node), out, show=not quiet)
    status = result.get("status", "succeeded")
    from federation.result_tables import summary_text

    typer.echo(summary_text(result))
    plots = [result["plot"]] if result.get("plot") else []
    typer.echo(f"plots: {', '.join(str(out / p) for p in plots)}" if plots else "plots: none")
    typer.echo(f"{status}: wrote {out / 'result.json'}")
    if status != "succeeded":
        typer.echo(f"reason: {result.get('reason')}", err=True)
        raise typer.Exit(code=1)


def demo(
    out: Annotated[
        Path, typer.Option(help="Output folder: data, node state, report.json, plots.")
    ] = Path("demo-output"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic scenario.")] = 2017,
    rounds: Annotated[int, typer.Option(min=1, max=50, help="Training rounds.")] = 5,
    epsilon: Annotated[float, typer.Option(min=0.1, max=50, help="Training ε per node.")] = 3.0,
) -> None:
    """Generate the Iwamizawa scenario and run the consortium's questions end to end."""
    from hamanasu.demo import run_demo

    run_demo(out=out, seed=seed, rounds=rounds, epsilon=epsilon)


def register(app: typer.Typer) -> None:
    """Add ``simulate`` and ``demo`` to the top-level app."""
    app.command("simulate")(simulate)
    app.command("demo")(demo)
