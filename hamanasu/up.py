"""``hamanasu up``: a local consortium on loopback.

The coordinator and a node service for each of the scenario's six holders (the city, its
two maternity facilities, the insurer, the drugstore, the dairy company). By default the
city node reads its own database through a mapping file (docs/databases.md): schemas in
the PostgreSQL database ``--postgres`` names (or ``$HAMANASU_UP_POSTGRES_URL``), else a
SQLite file, as the output says; the other nodes read their files. ``--databases all``
puts every node on its database (``--sqlite`` is the same with SQLite), ``--databases
none`` none. With
``--engine embedded`` (default) jobs run on Flower's simulation engine inside the
coordinator's process; with ``--engine deployment`` the coordinator starts a SuperLink
(TLS, SuperNode authentication; PKI under ``OUT/pki``) and every node service runs its
own SuperNode with its own key (``OUT/nodepki/NAME``), as across the city's machines.

It generates the Iwamizawa scenario (unless present), initialises the nodes with the
scenario's policies and consents, bootstraps the coordinator, registers the nodes,
their admins, each node service's own token and one researcher, writes every token to a
0600 file under ``OUT/tokens/`` (``NAME``: the node service's, ``NAME-admin``: its human
admin's), and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register", "up"]


def up(
    out: Annotated[
        Path, typer.Option(help="Folder for data, node state, coordinator and tokens.")
    ] = Path("consortium"),
    port: Annotated[int, typer.Option(help="The coordinator's port on 127.0.0.1.")] = 8750,
    years: Annotated[
        list[int] | None, typer.Option("--year", help="Scenario years (default 2019).")
    ] = None,
    poll: Annotated[float, typer.Option(help="Node services' poll interval (s).")] = 2.0,
    engine: Annotated[
        str, typer.Option(help="embedded (simulation) or deployment (SuperLink + SuperNodes).")
    ] = "embedded",
    superlink_port: Annotated[int, typer.Option(help="The SuperLink's port.")] = 9092,
    sqlite: Annotated[
        bool,
        typer.Option("--sqlite", help="Every node reads a SQLite database (--databases all)."),
    ] = False,
    databases: Annotated[
        str,
        typer.Option(help="Which nodes read a database through a mapping: city, all or none."),
    ] = "city",
    postgres: Annotated[
        str | None,
        typer.Option(
            "--postgres",
            metavar="URL",
            envvar="HAMANASU_UP_POSTGRES_URL",
            help="PostgreSQL database for the nodes' databases (one schema each); "
            "without it, SQLite files.",
        ),
    ] = None,
    schema_prefix: Annotated[
        str, typer.Option(help="Prefix of the PostgreSQL schema names.")
    ] = "up_",
) -> None:
    """Start a local consortium: coordinator + a node for each of the six holders, on loopback."""
    import uvicorn

    from coordinator.api import bootstrap_operator, create_app
    from coordinator.client import CoordinatorClient
    from coordinator.settings import load_settings
    from federation.api_client import read_token, write_token
    from federation.pki import Pki
    from hamanasu.demo import EXAMPLES
    from hamanasu.local_runner import EmbeddedRunner, LocalNode
    from nodes.cli import import_consents, init_node
    from nodes.enforcement import EnforcementPoint
    from nodes.scenario import ScenarioManifest, generate
    from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig, install_stop_signals
    from nodes.supernode import SupernodeConfig, SupernodeSupervisor

    if engine not in ("embedded", "deployment"):
        typer.echo(f"error: --engine: {engine!r} is not embedded or deployment", err=True)
        raise typer.Exit(code=2)
    if (out / "coordinator").exists():
        typer.echo(
            f"error: {out} holds a consortium already; remove it or pick another --out", err=True
        )
        raise typer.Exit(code=2)
    if sqlite:
        databases = "all"
    if databases not in ("city", "all", "none"):
        typer.echo(f"error: --databases: {databases!r} is not city, all or none", err=True)
        raise typer.Exit(code=2)
    if not (out / "data" / "scenario.json").exists():
        generate("iwamizawa", out / "data", years=years or [2019])
    manifest = ScenarioManifest.model_validate_json((out / "data" / "scenario.json").read_text())
    store = _DataStore(out / "data", None if sqlite else postgres, schema_prefix)
    local = {}
    for holder in manifest.nodes:
        name = holder.name
        state = out / "nodes" / name
        shutil.rmtree(state, ignore_errors=True)
        init_node(state, name, EXAMPLES / "policies" / f"{name}.toml")
        import_consents(EnforcementPoint(name, state), out / "data" / name / "consents.csv")
        if databases == "all" or (databases == "city" and name == "city"):
            data, where = store.database(name, holder.files)
        else:
            data, where = out / "data" / name, f"files in {out / 'data' / name}"
        typer.echo(f"{name}: {where}")
        local[name] = LocalNode(name, data, state)
    settings = load_settings(
        data_dir=out / "coordinator",
        host="127.0.0.1",
        port=port,
        engine="deployment" if engine == "deployment" else "none",
        pki_dir=out / "pki",
        superlink_port=superlink_port,
    )
    # SIGTERM / Ctrl-C from here on stop everything started below, however far it got
    stop = threading.Event()
    install_stop_signals(stop)
    supervisors: list[Any] = []
    workers: list[threading.Thread] = []
    server: Any = None
    flower = _start_flower(settings, out, list(local)) if engine == "deployment" else None
    try:
        app = create_app(settings, None if flower else EmbeddedRunner(local), engine=flower)
        tokens = out / "tokens"
        write_token(tokens / "operator", bootstrap_operator(app.state.store).token)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        workers.append(thread)
        url = f"http://127.0.0.1:{port}"
        while not server.started and thread.is_alive() and not stop.is_set():
            time.sleep(0.05)
        oper = CoordinatorClient(url, read_token(tokens / "operator", "operator token"))
        services = []
        for name, node in local.items():
            oper.register_node(name)
            if flower is not None:
                pub = Pki(out / "nodepki" / name).node(name).public_key.read_text()
                oper.register_supernode_key(name, pub)
            admin = oper.create_principal(f"{name}-admin", "node_admin", name)
            write_token(tokens / f"{name}-admin", admin.token.token)  # the node's human admin
            write_token(tokens / name, oper.issue_service_token(name).token)  # its service
            cfg = NodeServiceConfig(
                name=name,
                coordinator_url=url,
                state_dir=node.state_dir,
                data_dir=node.data,
                token_file=tokens / name,
                admin_token_file=tokens / f"{name}-admin",
                poll_interval=poll,
                supernode=None
                if flower is None
                else SupernodeConfig(
                    superlink=flower.address, pki_dir=out / "nodepki" / name, restart_after=2.0
                ),
            )
            link = CoordinatorLink.connect(url, read_token(tokens / name, f"{name} token"), name)
            admin_link = CoordinatorLink.connect(
                url, read_token(tokens / f"{name}-admin", f"{name} admin token"), name
            )
            services.append(NodeService(cfg, link, admin_link))
        # the example specs' requester and project (examples/iwamizawa/lbw_*.toml)
        oper.register_organisation("hokkaido-university", "academic", {"iwamizawa-mch-2017": False})
        researcher = oper.create_principal("researcher", "researcher", None, "hokkaido-university")
        write_token(tokens / "researcher", researcher.token.token)
        for s in services:
            if s.config.supernode is not None and s.config.data_dir is not None:
                sup = SupernodeSupervisor(
                    s.config.name, s.config.supernode, s.config.data_dir, s.config.state_dir
                )
                sup.start()
                supervisors.append(sup)
        ticks = {sup.name: sup.check for sup in supervisors}
        for s in services:
            w = threading.Thread(target=s.serve, args=(stop, ticks.get(s.config.name)), daemon=True)
            w.start()
            workers.append(w)
        typer.echo(
            f"coordinator on {url} (docs {url}/docs); nodes {', '.join(local)}; tokens in {tokens}"
        )
        typer.echo(
            f"try: HAMANASU_COORDINATOR_URL={url} hamanasu job submit "
            f"{EXAMPLES / 'lbw_model.toml'} --token-file {tokens / 'researcher'}"
        )
        # Timed waits: a signal the kernel hands to another thread runs its handler only
        # when the main thread next wakes (an untimed wait can sleep through SIGTERM).
        while not stop.wait(0.5):
            pass
    finally:
        _shut_down(stop, server, workers, [*supervisors, *([flower] if flower else [])])
    typer.echo("stopped")


class _DataStore:
    """Puts a holder's scenario files into its database.

    PostgreSQL when a URL is given and the server answers, else SQLite (saying why).
    """

    def __init__(self, data: Path, postgres: str | None, prefix: str) -> None:
        self.data, self.postgres, self.prefix = data, postgres, prefix

    def database(self, name: str, files: dict[str, str]) -> tuple[Path, str]:
        """Write holder ``name``'s database.

        Returns:
            Its mapping file, and a line saying what the database is, for the output.
        """
        import os

        import sqlalchemy as sa

        from nodes.scenario.databases import (
            POSTGRES_URL_ENV,
            postgres_schema,
            show_url,
            write_postgres,
            write_sqlite,
        )

        why = "no --postgres URL"
        if self.postgres:
            schema = postgres_schema(name, self.prefix)
            try:
                mapping = write_postgres(self.data / name, files, self.postgres, schema)
            except (ValueError, sa.exc.SQLAlchemyError) as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                why = f"PostgreSQL {show_url(self.postgres)} refused: {reason}"
            else:
                os.environ.setdefault(POSTGRES_URL_ENV, self.postgres)  # if the mapping needs it
                shown = show_url(self.postgres)
                return mapping, f"PostgreSQL schema {schema} of {shown}, through {mapping}"
        mapping = write_sqlite(self.data / name, files)
        db = self.data / name / f"{name}.db"
        return mapping, f"SQLite database {db}, through {mapping} ({why})"


def _shut_down(
    stop: threading.Event, server: Any, workers: list[threading.Thread], stoppable: list[Any]
) -> None:
    """Stop the node services, the coordinator's server, then every Flower process at once.

    The services go first (so none restarts a SuperNode being stopped); the SuperNodes
    and the SuperLink are stopped in parallel, each SIGTERM then SIGKILL, so the whole
    takes one grace period, not one per process.
    """
    from concurrent.futures import ThreadPoolExecutor

    stop.set()
    if server is not None:
        server.should_exit = True
    for w in workers:
        w.join(timeout=10)
    if stoppable:
        with ThreadPoolExecutor(len(stoppable)) as pool:
            list(pool.map(lambda s: s.stop(), stoppable))


def _start_flower(settings: Any, out: Path, names: list[str]) -> Any:
    """Create the PKI and the nodes' own keys (unless present); start the SuperLink.

    Returns:
        The started :class:`coordinator.flower_engine.FlowerEngine`.
    """
    from coordinator.flower_control import FlowerApp
    from coordinator.flower_engine import FlowerEngine
    from federation.pki import Pki, create_node_key, init_pki
    from hamanasu import FLOWER_APP_DIR

    pki = Pki(out / "pki")
    if not pki.exists():
        init_pki(pki.root)
    for name in names:
        own = Pki(out / "nodepki" / name)
        own.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (own.root / "ca.pem").write_bytes(pki.ca_cert.read_bytes())
        if not own.node(name).private_key.exists():
            create_node_key(own, name)
    return FlowerEngine(settings, FlowerApp.load(FLOWER_APP_DIR)).start()


def register(app: typer.Typer) -> None:
    """Add ``up`` to the top-level app."""
    app.command("up")(up)
