"""``hamanasu node ...``: set up and administer a data holder's node.

Every command takes the node's state folder (``--dir``). Bad input ends with one line on
stderr naming what is wrong and exit code 2, and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from federation.cli_options import FormatOption, OutputFormat
from nodes.node_state import NodeState

__all__ = ["app", "init_node"]

app = typer.Typer(no_args_is_help=True, help="Run and administer a data holder's node.")
consent_app = typer.Typer(no_args_is_help=True, help="Import and inspect consents.")
policy_app = typer.Typer(no_args_is_help=True, help="Show and dry-run the node policy.")
budget_app = typer.Typer(no_args_is_help=True, help="The node's privacy budget.")
ledger_app = typer.Typer(no_args_is_help=True, help="The node's signed ledger.")
app.add_typer(consent_app, name="consent")
app.add_typer(policy_app, name="policy")
app.add_typer(budget_app, name="budget")
app.add_typer(ledger_app, name="ledger")

NodeDir = Annotated[Path, typer.Option("--dir", help="The node's state folder.")]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn expected errors into one line on stderr and exit code 2."""
    try:
        yield
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        text = str(exc).strip("'\"").splitlines()[0] if str(exc) else type(exc).__name__
        typer.echo(f"error: {text}", err=True)
        raise typer.Exit(code=2) from None


def _state(folder: Path) -> NodeState:
    state = NodeState(folder)
    if not state.exists():
        raise FileNotFoundError(
            f"--dir: {folder} is not an initialised node (run `hamanasu node init`)"
        )
    return state


def init_node(folder: Path, name: str, policy_file: Path | None = None) -> NodeState:
    """Create a node's state folder: Ed25519 key (0600), public key, policy, ledger, budget.

    Returns:
        The :class:`NodeState`.

    Raises:
        FileExistsError: the folder already holds a node key.
        policies.PolicyError: the policy file is invalid (names the field).
    """
    from consent.signing import generate_key, write_public_key
    from policies import default_policy, load_policy, policy_to_toml

    state = NodeState(folder)
    if state.key_path.exists():
        raise FileExistsError(f"--dir: {folder} already holds a node key")
    policy = load_policy(policy_file) if policy_file else default_policy()
    folder.mkdir(parents=True, exist_ok=True)
    state.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_key(state.key_path)
    write_public_key(key.public_key(), state.public_key_path)
    state.policy_path.write_text(policy_to_toml(policy), encoding="utf-8")
    (folder / "node.json").write_text(json.dumps({"name": name}), encoding="utf-8")
    from nodes.enforcement import EnforcementPoint

    point = EnforcementPoint(name, folder)
    point.ledger().sign_head()
    point.budget()
    return state


def _node_name(state: NodeState) -> str:
    meta = state.root / "node.json"
    return str(json.loads(meta.read_text())["name"]) if meta.exists() else state.root.name


@app.command("init")
def init_cmd(
    folder: NodeDir,
    name: Annotated[str, typer.Option(help="The node's name, e.g. city-hospital.")],
    policy: Annotated[
        Path | None, typer.Option(help="A policy TOML (default: the built-in default).")
    ] = None,
) -> None:
    """Create the node's state folder, key (0600), default policy, ledger and budget."""
    with _one_line_errors():
        state = init_node(folder, name, policy)
    typer.echo(f"initialised node {name} in {state.root} (public key {state.public_key_path})")


@consent_app.command("import")
def consent_import(
    file: Annotated[Path, typer.Argument(help="Consents: CSV (bulk paper form) or FHIR R5 JSON.")],
    folder: NodeDir,
) -> None:
    """Import consents atomically; each becomes a version and a ledger entry."""
    from nodes.enforcement import EnforcementPoint

    with _one_line_errors():
        state = _state(folder)
        point = EnforcementPoint(_node_name(state), state.root)
        count = import_consents(point, file)
    typer.echo(f"imported {count} consent version(s) into {state.consents_path}")


def import_consents(point: Any, file: Path) -> int:
    """Import a CSV or FHIR consent file into a node's registry, logging to its ledger.

    Returns:
        The number of consent versions imported.

    Raises:
        consent.errors.ConsentImportError: any entry is invalid (nothing is imported).
        FileNotFoundError: no such file.
    """
    if not file.exists():
        raise FileNotFoundError(f"{file}: no such file")
    registry = point.registry()
    if file.suffix.lower() == ".csv":
        return int(registry.import_csv(file, ledger=point.ledger()).imported)
    return int(registry.import_fhir(file, ledger=point.ledger()).imported)


@policy_app.command("show")
def policy_show(folder: NodeDir) -> None:
    """Print the policy in force."""
    with _one_line_errors():
        typer.echo(_state(folder).policy_path.read_text(encoding="utf-8"))


@policy_app.command("check")
def policy_check(
    job: Annotated[Path, typer.Argument(help="Job spec (TOML or JSON).")],
    folder: NodeDir,
    data: Annotated[
        Path | None, typer.Option(help="The node's data folder, to count consenting subjects.")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Dry run: would this job run here, under which limits, on how many subjects.

    Exits 0 when the policy allows the job, 1 when it denies it, 3 when the node's admin
    must decide, and 2 on bad input.
    """
    from federation.spec import load_job_spec
    from nodes.enforcement import EnforcementPoint
    from nodes.sources import read_columns

    with _one_line_errors():
        spec = load_job_spec(job)
        state = _state(folder)
        point = EnforcementPoint(_node_name(state), state.root)
        cohort = None
        if data is not None:
            frame = read_columns(data, spec.domain, spec.columns())
            mask = point.permitted_subjects(spec, frame["subject"].astype(str).to_numpy())
            cohort = int(frame.loc[mask, "subject"].nunique())
        decision = point.review(spec, "dry-run", cohort_size=cohort)
    out = {
        "outcome": decision.outcome,
        "reasons": [
            {"code": r.code, "message": r.message, "field": r.field} for r in decision.reasons
        ],
        "limits": decision.limits.model_dump(),
        "subjects_after_consent": cohort,
    }
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(out, indent=2))
    else:
        _print_decision(out, spec.name, _node_name(state))
    if decision.outcome != "allow":
        raise typer.Exit(_CHECK_EXIT[decision.outcome])


#: ``node policy check`` exit codes: allow 0, deny 1, waiting for the admin 3 (2 is bad input).
_CHECK_EXIT = {"allow": 0, "deny": 1, "needs_approval": 3}


def _print_decision(out: dict[str, Any], job: str, node: str) -> None:
    """Print a policy decision as two tables: the reasons, then the limits in force."""
    console = Console(width=min(Console().width, 100))
    cohort = out["subjects_after_consent"]
    console.print(
        f"{out['outcome']} for {job} at {node}"
        + (f": {cohort} subjects after consent filtering" if cohort is not None else "")
    )
    if out["reasons"]:
        reasons = Table("rule", "field", "why", title="reasons", title_justify="left")
        for r in out["reasons"]:
            reasons.add_row(r["code"], r["field"] or "", r["message"])
        console.print(reasons)
    limits = Table("limit", "value", title="limits", title_justify="left")
    for key, value in out["limits"].items():
        limits.add_row(key, "" if value is None else str(value))
    console.print(limits)


@budget_app.command("show")
def budget_show(folder: NodeDir, fmt: FormatOption = OutputFormat.table) -> None:
    """Show the privacy budget per domain for the current period."""
    from nodes.enforcement import EnforcementPoint

    with _one_line_errors():
        state = _state(folder)
        rows = [
            s.as_dict() for s in EnforcementPoint(_node_name(state), state.root).budget().show()
        ]
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(
        "domain",
        "period",
        "ε budget",
        "ε spent",
        "ε reserved",
        "ε left",
        "δ left",
        "jobs",
        title="privacy budget",
    )
    for row in rows:
        table.add_row(
            row["domain"],
            row["period"],
            f"{row['budget_epsilon']:.3g}",
            f"{row['spent_epsilon']:.3g}",
            f"{row['reserved_epsilon']:.3g}",
            f"{row['remaining_epsilon']:.3g}",
            f"{row['remaining_delta']:.1e}",
            f"{row['active_jobs']}+{row['closed_jobs']}",
        )
    Console(width=80).print(table)
    typer.echo("jobs: active + closed; ε left = budget − closed − reserved")


@budget_app.command("jobs")
def budget_jobs(
    folder: NodeDir,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many jobs at most.")] = 50,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show each job's reservation, newest first: ε reserved and used, rounds charged.

    A released one says when and why (a failed job: which rounds stay charged, and why).
    """
    from nodes.admin_models import JobReservation
    from nodes.enforcement import EnforcementPoint

    with _one_line_errors():
        state = _state(folder)
        held = EnforcementPoint(_node_name(state), state.root).budget().reservations(limit)
    rows = [JobReservation.of(r).model_dump(mode="json") for r in held]
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("job", "domain", "status", "ε reserved", "ε used", "rounds", "why released")
    for row in rows:
        table.add_row(
            row["job_id"],
            f"{row['domain']} {row['period']}",
            row["status"],
            f"{row['reserved_epsilon']:.3g}",
            f"{row['used_epsilon']:.3g}",
            str(row["rounds_charged"]),
            row["release_reason"] or "",
        )
    Console(width=160).print(table)
    if not rows:
        typer.echo("no job has reserved budget at this node")


@ledger_app.command("head")
def ledger_head(
    folder: NodeDir,
    out: Annotated[
        Path | None, typer.Option(help="Also write the signed head to this file.")
    ] = None,
) -> None:
    """Sign and print the ledger's current tree head (size, root, time, signature)."""
    from nodes.enforcement import EnforcementPoint

    with _one_line_errors():
        state = _state(folder)
        head = EnforcementPoint(_node_name(state), state.root).ledger().sign_head()
    text = head.model_dump_json(indent=2)
    if out is not None:
        out.write_text(text, encoding="utf-8")
    typer.echo(text)


@ledger_app.command("disclose")
def ledger_disclose(
    folder: NodeDir,
    job: Annotated[str, typer.Option(help="The job whose subjects and salt to disclose.")],
    out: Annotated[Path, typer.Option(help="Disclosure file for `hamanasu audit usage`.")],
) -> None:
    """Write the salt and per-round subjects of one job, for an auditor (keep it confidential)."""
    import os

    with _one_line_errors():
        data = _state(folder).disclosure(job)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
    typer.echo(f"wrote the disclosure of job {job} to {out} (0600)")


from nodes.approvals_cli import app as approvals_app  # noqa: E402
from nodes.approvals_cli import health as health_cmd  # noqa: E402
from nodes.approvals_cli import serve as serve_cmd  # noqa: E402

app.add_typer(approvals_app, name="approvals")
app.command("serve")(serve_cmd)
app.command("health")(health_cmd)
from nodes.data_cli import app as pseudonymise_app  # noqa: E402
from nodes.data_cli import map_app  # noqa: E402

app.add_typer(map_app, name="map")
app.add_typer(pseudonymise_app, name="pseudonymise")
