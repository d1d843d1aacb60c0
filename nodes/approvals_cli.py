"""``hamanasu node approvals ...`` (list, approve, reject, held, release, withhold), ``node serve``.

Both talk to the coordinator through the node service (outbound only), configured by
``node.toml`` (:class:`nodes.service.NodeServiceConfig`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import httpx
import typer

from federation.cli_options import FormatOption, OutputFormat
from federation.linkage.reveals import linkage_statement
from federation.log_escape import log_to_stderr
from nodes.service import (
    CoordinatorLink,
    NodeService,
    NodeServiceError,
    install_stop_signals,
    load_node_config,
    read_token,
)
from nodes.supernode import SupernodeSupervisor

__all__ = ["app", "health", "serve"]

app = typer.Typer(no_args_is_help=True, help="Jobs waiting for this node's decision.")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="HAMANASU_NODE_CONFIG",
        help="The node service's node.toml (default: HAMANASU_NODE_* variables alone).",
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (NodeServiceError, ValueError, OSError) as exc:
        typer.echo(
            f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True
        )
        raise typer.Exit(code=2) from None


def _service(config: Path | None, *, service_token_file: bool = False) -> NodeService:
    cfg = load_node_config(config)
    if service_token_file and cfg.token_file is None:
        raise NodeServiceError(
            "token_file: the node service reads its token from a 0600 file; set token_file "
            "(or HAMANASU_NODE_TOKEN_FILE), it does not take HAMANASU_TOKEN"
        )
    link = CoordinatorLink.connect(
        cfg.coordinator_url, read_token(cfg.token_file), cfg.name, cfg.ca_file
    )
    admin_link = None
    if cfg.admin_token_file is not None:
        admin_link = CoordinatorLink.connect(
            cfg.coordinator_url, read_token(cfg.admin_token_file), cfg.name, cfg.ca_file
        )
    return NodeService(cfg, link, admin_link)


@app.command("list")
def list_cmd(config: ConfigOpt = None, fmt: FormatOption = OutputFormat.table) -> None:
    """List the jobs waiting for this node (policy not yet run, or waiting for the admin).

    A linked job also says what its linkage reveals to this node.
    """
    with _errors():
        jobs = _service(config).waiting()
    if fmt is OutputFormat.json:
        typer.echo(json.dumps([{**j.model_dump(mode="json"), "linkage": linkage_statement(j.spec)}
                               for j in jobs], indent=2))
        return
    for j in jobs:
        eps = (j.spec.get("privacy") or {}).get("epsilon")
        typer.echo(
            f"{j.id} {j.name} by {j.owner} ({j.spec.get('kind')}, ε {eps}): {j.approval.status}"
        )
        reveals = linkage_statement(j.spec)
        if reveals:
            typer.echo(f"  what linkage reveals: {reveals}")
    if not jobs:
        typer.echo("no job waits for this node")


@app.command("approve")
def approve_cmd(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOpt,
    reason: Annotated[str | None, typer.Option(help="Why (kept with the approval).")] = None,
) -> None:
    """Approve a job for this node (the node policy must not deny it)."""
    with _errors():
        _service(config).approve(job_id, reason)
    typer.echo(f"approved {job_id}")


@app.command("reject")
def reject_cmd(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOpt,
    reason: Annotated[str, typer.Option(help="Why (required; shown to the researcher).")],
) -> None:
    """Reject a job for this node, with a reason."""
    with _errors():
        _service(config).reject(job_id, reason)
    typer.echo(f"rejected {job_id}")


@app.command("held")
def held_cmd(config: ConfigOpt = None, fmt: FormatOption = OutputFormat.table) -> None:
    """List the results held for this node's release review (summaries, never the data)."""
    with _errors():
        views = _service(config).held()
    if fmt is OutputFormat.json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in views], indent=2))
        return
    for v in views:
        done = sum(1 for d in v.decisions if d.decision == "release")
        typer.echo(
            f"{v.job_id} {v.name} by {v.owner} ({v.kind}, {v.result_status}): "
            f"{done} of {v.reviews_needed} release(s), result sha256 {v.result_hash[:16]}…"
        )
    if not views:
        typer.echo("no result waits for this node's review")


@app.command("release")
def release_cmd(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOpt,
    reason: Annotated[
        str | None, typer.Option(help="Why (kept with the decision and in the ledger).")
    ] = None,
) -> None:
    """Release a held result (output checked); the node's ledger records it."""
    with _errors():
        view = _service(config).review_result(job_id, "release", reason)
    typer.echo(f"released {job_id} ({view.status})")


@app.command("withhold")
def withhold_cmd(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOpt,
    reason: Annotated[str, typer.Option(help="Why (required; shown to the researcher).")],
) -> None:
    """Withhold a held result, with a reason; the node's ledger records it."""
    with _errors():
        _service(config).review_result(job_id, "withhold", reason)
    typer.echo(f"withheld {job_id}")


def serve(config: ConfigOpt = None) -> None:
    """Run the node service: publish caps, pull jobs, decide by policy; stop on SIGTERM.

    With ``[node.supernode]`` it also runs the node's Flower SuperNode (restarted if it
    dies); with ``[node.admin]`` it serves the node's admin API and console on loopback.
    Its heartbeat, for ``hamanasu node health``, is the status file in its state folder.
    """
    log_to_stderr(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
    with _errors():
        service = _service(config, service_token_file=True)
        cfg = service.config
        try:
            service.check_credential()  # a human's token in token_file stops it here
        except httpx.HTTPError as exc:
            typer.echo(f"node {cfg.name}: coordinator not reachable yet ({exc})", err=True)
        supervisor = None
        if cfg.supernode is not None:
            if cfg.data_dir is None:
                raise NodeServiceError("data_dir: a node that runs a SuperNode needs its data")
            supervisor = SupernodeSupervisor(cfg.name, cfg.supernode, cfg.data_dir, cfg.state_dir)
            supervisor.check_files()
            service.supernode_status = supervisor.status
    stop = threading.Event()
    install_stop_signals(stop)
    admin = None
    if cfg.admin is not None:
        from nodes.admin_api import create_admin_app, serve_admin

        app_ = create_admin_app(service, supervisor.status if supervisor else None)
        with _errors():
            admin = serve_admin(app_, cfg.admin.host, cfg.admin.port, stop)
        typer.echo(
            f"node {cfg.name}: admin API and console on "
            f"http://{cfg.admin.host}:{admin.port}/console/"
        )
    typer.echo(f"node {cfg.name}: polling {cfg.coordinator_url} every {cfg.poll_interval:g} s")
    try:
        if supervisor is not None:
            supervisor.start()
            typer.echo(f"node {cfg.name}: SuperNode towards {cfg.supernode.superlink}")  # type: ignore[union-attr]
        service.serve(stop, tick=supervisor.check if supervisor else None)
    finally:
        stop.set()
        if supervisor is not None:
            supervisor.stop()
        if admin is not None:
            admin.join(timeout=10)
    typer.echo("stopped")


def health(
    config: ConfigOpt = None,
    ready: Annotated[
        bool,
        typer.Option(
            "--ready",
            help="Also need the last poll of the coordinator to have succeeded and the "
            "SuperNode (if any) to run.",
        ),
    ] = False,
    max_age: Annotated[
        float | None,
        typer.Option(help="Seconds a heartbeat stays fresh (default: poll interval + 150)."),
    ] = None,
) -> None:
    """Check the running node service by its heartbeat: exit 0 healthy, 1 not.

    For a container HEALTHCHECK or monitoring; reads the status file in the state folder
    (the service listens nowhere) and prints one line saying what holds or what fails.
    """
    from nodes.health import check_status, default_max_age

    with _errors():
        cfg = load_node_config(config)
    result = check_status(
        cfg.status_file,
        max_age=max_age if max_age is not None else default_max_age(cfg.poll_interval),
        ready=ready,
    )
    if not result.ok:
        typer.echo(f"unhealthy: node {cfg.name}: {result.line}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"node {cfg.name}: {result.line}")
