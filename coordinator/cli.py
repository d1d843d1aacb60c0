"""``hamanasu coordinator ...`` (operator) and ``hamanasu job ...`` (researchers).

The token comes from ``HAMANASU_TOKEN`` or ``--token-file`` (a 0600 file), the
coordinator's address from ``--url`` or ``HAMANASU_COORDINATOR_URL``. Errors end with one
line on stderr and exit code 2; ``--format json`` prints what scripts read.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from coordinator.client import CoordinatorAPIError, CoordinatorClient
from coordinator.errors import CoordinatorError
from coordinator.schemas import Role
from federation.api_client import read_token, write_token
from federation.cli_options import FormatOption, OutputFormat
from federation.errors import JobSpecError
from federation.log_escape import log_to_stderr
from federation.spec import read_spec_text

__all__ = ["app", "job_app", "load_runner"]

app = typer.Typer(no_args_is_help=True, help="Run and administer the coordinator.")
job_app = typer.Typer(no_args_is_help=True, help="Submit and follow federated jobs.")
principal_app = typer.Typer(no_args_is_help=True, help="Principals and their tokens (operator).")
organisation_app = typer.Typer(
    no_args_is_help=True, help="Researchers' organisations and their projects (operator)."
)
app.add_typer(principal_app, name="principal")
app.add_typer(organisation_app, name="organisation")

Url = Annotated[
    str, typer.Option("--url", envvar="HAMANASU_COORDINATOR_URL", help="The coordinator's URL.")
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="A 0600 file holding the API token (default: the HAMANASU_TOKEN variable).",
    ),
]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="The coordinator's data folder.")]
Config = Annotated[
    Path | None, typer.Option("--config", help="A TOML file with a [coordinator] table.")
]
DEFAULT_URL = "http://127.0.0.1:8750"
#: Seconds a stopping coordinator waits for open connections before it closes them.
SHUTDOWN_GRACE_S = 3


class _Fail(Exception):
    pass


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except CoordinatorAPIError as exc:
        typer.echo(
            f"error: {exc.message}" + (f" (HTTP {exc.status})" if exc.status else ""), err=True
        )
        raise typer.Exit(code=2) from None
    except (CoordinatorError, _Fail, ValueError, OSError, TimeoutError) as exc:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        typer.echo(f"error: {text.splitlines()[0]}", err=True)
        raise typer.Exit(code=2) from None


def _client(url: str, token_file: Path | None) -> CoordinatorClient:
    """A client for ``url``; ``HAMANASU_CA_FILE`` names the CA of a private TLS certificate."""
    ca = os.environ.get("HAMANASU_CA_FILE")
    return CoordinatorClient(
        url or DEFAULT_URL, read_token(token_file, "--token-file"), ca_file=Path(ca) if ca else None
    )


def _print(data: Any, fmt: OutputFormat, text: str) -> None:
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        typer.echo(text)


# -- coordinator (operator) --------------------------------------------------------------------
@app.command("init")
def init_cmd(
    data_dir: DataDir = None,
    config: Config = None,
    name: Annotated[str, typer.Option(help="The first operator's name.")] = "operator",
    token_out: Annotated[
        Path | None, typer.Option(help="Also write the token to this file (0600).")
    ] = None,
) -> None:
    """Create the database and the first operator; print its token once."""
    from coordinator.api import bootstrap_operator, open_store
    from coordinator.settings import load_settings

    with _one_line_errors():
        settings = load_settings(config, data_dir=data_dir)
        issued = bootstrap_operator(open_store(settings), name)
        if token_out is not None:
            write_token(token_out, issued.token)
    typer.echo(f"initialised {settings.safe_url()}")
    typer.echo(f"operator token (shown once, keep it safe): {issued.token}")


def load_runner(spec: str) -> Any:
    """Import ``module:factory`` and call the factory to get a Runner.

    Raises:
        ValueError: the spec is malformed or the factory cannot be found.
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--runner: expected module:factory, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--runner: cannot load {spec!r}: {exc}") from None
    return factory()


def _flower_app(ctx: typer.Context) -> Any:
    """Return the Flower app the command that mounted this group passed in ``ctx.obj``.

    Raises:
        _Fail: none was passed (the coordinator does not know the nodes' ClientApp).
    """
    from coordinator.flower_control import FlowerApp

    folder = (ctx.obj or {}).get("flower_app") if isinstance(ctx.obj, dict) else None
    if folder is None:
        raise _Fail("engine: no Flower app to submit (start the coordinator with `hamanasu`)")
    return FlowerApp.load(Path(folder))


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    data_dir: DataDir = None,
    config: Config = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8750).")] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            help="module:factory returning the federation "
            "engine's Runner (default: the configured engine; none: approved jobs wait).",
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="none, or deployment: start a SuperLink (TLS, SuperNode auth) beside the "
            "coordinator and run jobs on Flower's deployment engine.",
        ),
    ] = None,
    pki_dir: Annotated[
        Path | None, typer.Option(help="The federation's PKI folder (hamanasu pki init).")
    ] = None,
    superlink_port: Annotated[
        int | None, typer.Option(help="The SuperLink's port (default 9092).")
    ] = None,
) -> None:
    """Serve the coordinator's API with uvicorn (OpenAPI docs at /docs)."""
    import uvicorn

    from coordinator.api import create_app
    from coordinator.settings import load_settings

    flower = None
    with _one_line_errors():
        settings = load_settings(
            config,
            data_dir=data_dir,
            host=host,
            port=port,
            engine=engine,
            pki_dir=pki_dir,
            superlink_port=superlink_port,
        )
        the_runner = load_runner(runner) if runner else None
        if settings.engine == "deployment" and the_runner is None:
            from coordinator.flower_engine import FlowerEngine

            flower = FlowerEngine(settings, _flower_app(ctx)).start()
    try:
        with _one_line_errors():
            application = create_app(settings, the_runner, engine=flower)
        ssl: dict[str, Any] = {}
        if settings.ssl_certfile is not None:
            ssl = {
                "ssl_certfile": str(settings.ssl_certfile),
                "ssl_keyfile": str(settings.ssl_keyfile),
            }
        log_to_stderr(logging.INFO)  # the coordinator's own records, escaped
        uvicorn.run(
            application,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=settings.access_log,
            # An idle keep-alive client over TLS holds a stop for as long as it stays
            # connected (uvicorn waits for every connection to close); bound that wait.
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            **ssl,
        )
    finally:
        if flower is not None:
            flower.stop()


@app.command("health")
def health_cmd(
    url: Url = DEFAULT_URL,
    live: Annotated[
        bool, typer.Option("--live", help="Liveness only (/healthz), not readiness (/readyz).")
    ] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(envvar="HAMANASU_CA_FILE", help="The CA of the API's TLS certificate."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Check a running coordinator (no token): exit 0 ready, 1 not ready or unreachable.

    For container HEALTHCHECKs and monitoring; the failing check is printed on one line.
    """
    import httpx

    path = "/healthz" if live else "/readyz"
    try:
        resp = httpx.get(
            url.rstrip("/") + path, timeout=timeout, verify=str(ca_file) if ca_file else True
        )
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        typer.echo(f"unhealthy: {url}{path}: {type(exc).__name__}", err=True)
        raise typer.Exit(code=1) from None
    checks = body.get("checks", {}) if isinstance(body, dict) else {}
    failing = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    if resp.status_code != 200:
        typer.echo(f"unhealthy: {failing or f'HTTP {resp.status_code}'}", err=True)
        raise typer.Exit(code=1)
    typer.echo("ok" + ("".join(f" {k}=ok" for k in checks) if checks else ""))


@principal_app.command("add")
def principal_add(
    name: Annotated[str, typer.Argument(help="Unique name, e.g. aki@hokudai.")],
    role: Annotated[str, typer.Option(help="One of: " + ", ".join(Role) + ".")],
    node: Annotated[str | None, typer.Option(help="The node a node_admin administers.")] = None,
    organisation: Annotated[
        str | None,
        typer.Option(help="A researcher's registered organisation (organisation add)."),
    ] = None,
    token_out: Annotated[
        Path | None, typer.Option(help="Write the new token to this file (0600).")
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Register a principal and print its token once (operator)."""
    with _one_line_errors(), _client(url, token_file) as c:
        created = c.create_principal(name, role, node, organisation)
        if token_out is not None:
            write_token(token_out, created.token.token)
        _print(
            created.model_dump(mode="json"),
            fmt,
            f"{created.principal.role} {created.principal.name}: "
            f"token (shown once) {created.token.token}",
        )


@organisation_app.command("add")
def organisation_add(
    name: Annotated[str, typer.Argument(help="The organisation, e.g. hokkaido-university.")],
    type_: Annotated[str, typer.Option("--type", help="academic, public, commercial or clinical.")],
    project: Annotated[
        list[str],
        typer.Option(help="A project it may run (repeat); NAME:commercial marks a commercial use."),
    ],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Register a researchers' organisation, its type and its projects (operator).

    Jobs of its researchers carry it as their requester, whatever a spec claims.
    """
    with _one_line_errors(), _client(url, token_file) as c:
        projects = {}
        for item in project:
            pname, _, flag = item.partition(":")
            if flag not in ("", "commercial"):
                raise ValueError(f"project: {item!r}: write NAME or NAME:commercial")
            projects[pname] = flag == "commercial"
        org = c.register_organisation(name, type_, projects)
        _print(
            org.model_dump(mode="json"),
            fmt,
            f"organisation {org.name} ({org.type}): projects "
            + ", ".join(p.name + (" (commercial)" if p.commercial else "") for p in org.projects),
        )


@principal_app.command("revoke")
def principal_revoke(
    prefix: Annotated[str, typer.Argument(help="The token's prefix (hmn_<prefix>_...).")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
) -> None:
    """Revoke a token (operator)."""
    with _one_line_errors(), _client(url, token_file) as c:
        c.revoke_token(prefix)
    typer.echo(f"revoked token {prefix}")


@app.command("node-add")
def node_add(
    name: Annotated[str, typer.Argument(help="The node's name, e.g. city-hospital.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    supernode_key: Annotated[
        Path | None,
        typer.Option(help="The node's SuperNode public key (.pub) to register with the SuperLink."),
    ] = None,
    service_token_out: Annotated[
        Path | None,
        typer.Option(help="Issue the node's service its token and write it to this file (0600)."),
    ] = None,
) -> None:
    """Register a node (operator); its service publishes its caps when it first polls."""
    with _one_line_errors(), _client(url, token_file) as c:
        key = _read_public_key(supernode_key) if supernode_key else None
        if name not in {n.name for n in c.nodes()}:
            c.register_node(name)
        typer.echo(f"registered node {name}")
        if service_token_out is not None:
            _write_service_token(c, name, service_token_out)
        if key is not None:
            out = c.register_supernode_key(name, key)
            typer.echo(f"registered its SuperNode key (Flower node id {out.flower_node_id})")


def _write_service_token(c: CoordinatorClient, name: str, out: Path) -> None:
    issued = c.issue_service_token(name)
    write_token(out, issued.token)
    typer.echo(f"wrote node {name}'s service token {issued.prefix} to {out}; earlier ones revoked")


@app.command("node-service-token")
def node_service_token(
    name: Annotated[str, typer.Argument(help="The node's name.")],
    out: Annotated[Path, typer.Option("--out", help="Write the token to this file (0600).")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
) -> None:
    """Issue (or rotate) a node service's own token (operator); earlier ones stop working."""
    with _one_line_errors(), _client(url, token_file) as c:
        _write_service_token(c, name, out)


@app.command("node-key")
def node_key_cmd(
    name: Annotated[str, typer.Argument(help="The node's name.")],
    public_key: Annotated[Path, typer.Argument(help="The node's SuperNode public key (.pub).")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
) -> None:
    """Register a node's SuperNode public key with the SuperLink (operator)."""
    with _one_line_errors(), _client(url, token_file) as c:
        out = c.register_supernode_key(name, _read_public_key(public_key))
    typer.echo(f"registered {name}'s SuperNode key (Flower node id {out.flower_node_id})")


def _read_public_key(path: Path) -> str:
    """Return a public key file's text.

    Raises:
        ValueError: unreadable, or not an OpenSSH public key (a private key is refused
            without echoing it).
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"supernode-key: cannot read {path}: {exc}") from None
    if "PRIVATE KEY" in text:
        raise ValueError(f"supernode-key: {path} is a private key; give the .pub file")
    return text


# -- jobs (researchers) ------------------------------------------------------------------------
def _status_line(job: Any) -> str:
    rounds = (
        f" round {job.round}/{job.rounds_total}" if job.state in ("running", "succeeded") else ""
    )
    held = " (result held for the nodes' release review)" if getattr(job, "held", False) else ""
    return f"{job.id} {job.name}: {job.state}{rounds}{held} — {job.reason}"


@job_app.command("submit")
def job_submit(
    spec: Annotated[Path, typer.Argument(help="Job spec (TOML or JSON).")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Submit a job; print its id (the coordinator validates it and asks the nodes)."""
    with _one_line_errors():
        try:
            text = spec.read_text(encoding="utf-8")
            data = read_spec_text(text, "json" if spec.suffix == ".json" else "toml", spec.name)
        except JobSpecError as exc:
            raise _Fail(exc.reason) from None
        with _client(url, token_file) as c:
            job = c.submit(data)
        # stdout carries the id alone (J=$(hamanasu job submit job.toml)); the state and
        # reason go to stderr for the person watching.
        _print(job.model_dump(mode="json"), fmt, job.id)
        if fmt is OutputFormat.table:
            why = f" — {job.reason}" if job.reason else ""
            typer.echo(f"{job.id}: {job.state}{why}", err=True)


@job_app.command("status")
def job_status(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show a job's state, round, reason and approvals."""
    with _one_line_errors(), _client(url, token_file) as c:
        job = c.status(job_id)
        lines = [_status_line(job)] + [
            f"  {a.node}: {a.status}"
            + (f" ({'; '.join(r.message for r in a.reasons)})" if a.reasons else "")
            for a in job.approvals
        ]
        _print(job.model_dump(mode="json"), fmt, "\n".join(lines))


@job_app.command("list")
def job_list(
    url: Url = DEFAULT_URL, token_file: TokenFile = None, fmt: FormatOption = OutputFormat.table
) -> None:
    """List one's jobs, newest first."""
    with _one_line_errors(), _client(url, token_file) as c:
        jobs = c.jobs()
        _print(
            [j.model_dump(mode="json") for j in jobs], fmt, "\n".join(_status_line(j) for j in jobs)
        )


@job_app.command("wait")
def job_wait(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between status reads.")] = 1.0,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Follow a job to its end with a progress bar over rounds; exit 1 unless it succeeded."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with _one_line_errors(), _client(url, token_file) as c:
        first = c.status(job_id)
        show = fmt is OutputFormat.table and sys.stderr.isatty()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            disable=not show,
            transient=False,
        ) as progress:
            task = progress.add_task(first.name, total=first.rounds_total, info=first.state)

            def update(job: Any) -> None:
                auc = job.metrics.get("auc")
                info = job.state + (f"  AUC {auc:.3f}" if isinstance(auc, float) else "")
                progress.update(task, completed=job.round, info=info)

            job = c.wait(job_id, poll=poll, timeout=timeout, on_update=update)
    _print(job.model_dump(mode="json"), fmt, _status_line(job))
    if job.state != "succeeded":
        raise typer.Exit(code=1)


@job_app.command("results")
def job_results(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for result.json, model.json, plot.png.")
    ],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Download a finished job's result, model and plot."""
    with _one_line_errors(), _client(url, token_file) as c:
        files = c.download(job_id, out)
        result = c.result(job_id)
        from federation.result_tables import summary_text

        plots = [f.name for f in files if f.suffix == ".png"]
        _print(
            {"files": [str(f) for f in files], "epsilon_by_node": result.epsilon_by_node},
            fmt,
            summary_text(result.report, result.epsilon_by_node)
            + f"\nplots: {', '.join(plots) if plots else 'none'}"
            + f"\nwrote {', '.join(f.name for f in files)} to {out}",
        )


@job_app.command("cancel")
def job_cancel(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Cancel a job (a running one stops at its next round)."""
    with _one_line_errors(), _client(url, token_file) as c:
        job = c.cancel(job_id)
        _print(job.model_dump(mode="json"), fmt, _status_line(job))
