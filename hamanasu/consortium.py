"""``hamanasu consortium init``: lay out a whole consortium on disk, ready to be served.

What ``hamanasu up`` does with running services, this does offline, for services started
elsewhere (the compose file, the systemd units, separate hosts): it writes one folder per
host, each holding only what that host needs, so an operator copies (or mounts) a folder
to its host and starts the service there.

``OUT/``

* ``coordinator/``: ``data/`` (the database, with every node registered, its SuperNode
  public key recorded and its service token issued; the token-hashing key, 0600) and
  ``pki/`` (the CA certificate, the SuperLink and API certificate for ``--host``, its key
  0600). The CA's private key is not there: it is in ``ca/`` (keep it offline).
* ``nodes/NAME/``: ``node.toml`` (relative paths), ``state/`` (the node's signing key,
  policy, consents, ledger, budget), ``pki/`` (the CA certificate and the node's own
  SuperNode key pair, private key 0600), ``secrets/service-token`` and
  ``secrets/admin-token`` (0600).
* ``operator/``: the operator's and a researcher's API tokens (0600), and the CA
  certificate their clients verify the API with (``ca.pem``).
* ``data/NAME/``: the synthetic Iwamizawa data of every holder (unless ``--no-data``),
  each node's ``data_dir``.

The SuperLink registers the recorded keys when the coordinator starts; nothing in a node's
folder is a secret of another node or of the coordinator.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["HOLDERS", "app", "init_consortium"]

app = typer.Typer(no_args_is_help=True, help="Lay out a consortium's hosts on disk.")

#: The Iwamizawa consortium's holders (``examples/iwamizawa/policies/NAME.toml``).
HOLDERS = ("city", "city-hospital", "dairy", "drugstore", "insurer", "women-clinic")
#: The researchers' organisation and project of the example job specs.
ORGANISATION, PROJECT = "hokkaido-university", "iwamizawa-mch-2017"


def _node_toml(name: str, url: str, superlink: str, data: str) -> str:
    return (
        f'# node {name}: paths are relative to this file; HAMANASU_NODE_* variables override.\n'
        "[node]\n"
        f'name = "{name}"\n'
        f'coordinator_url = "{url}"\n'
        'state_dir = "state"\n'
        f'data_dir = "{data}"\n'
        'token_file = "secrets/service-token"\n'
        'admin_token_file = "secrets/admin-token"\n'
        'ca_file = "pki/ca.pem"\n'
        "poll_interval = 5.0\n\n"
        "[node.supernode]\n"
        f'superlink = "{superlink}"\n'
        'pki_dir = "pki"\n'
    )


def init_consortium(
    out: Path,
    host: str,
    holders: tuple[str, ...] = HOLDERS,
    *,
    policies: Path,
    years: list[int] | None = None,
    data: bool = True,
    api_port: int = 8750,
    superlink_port: int = 9092,
) -> list[Path]:
    """Write the consortium's folders under ``out`` (see the module's docstring).

    Returns:
        The nodes' ``node.toml`` files.

    Raises:
        FileExistsError: ``out`` holds a consortium already.
        FileNotFoundError: a holder has no policy in ``policies``.
        ValueError: a bad holder name or host.
    """
    from coordinator.api import bootstrap_operator, open_store
    from coordinator.schemas import NodeCreate, OrganisationCreate, PrincipalCreate, ProjectCreate
    from coordinator.settings import load_settings
    from federation.api_client import write_token
    from federation.pki import Pki, create_node_key, init_pki
    from nodes.cli import import_consents, init_node
    from nodes.enforcement import EnforcementPoint

    if (out / "coordinator").exists():
        raise FileExistsError(f"--out: {out} holds a consortium already")
    for name in holders:
        Pki(out).node(name)  # refuses a bad name before anything is written
        if not (policies / f"{name}.toml").is_file():
            raise FileNotFoundError(f"--policies: no {name}.toml in {policies}")
    pki = init_pki(out / "coordinator" / "pki", (host, "localhost", "127.0.0.1"))
    (out / "ca").mkdir(mode=0o700, parents=True)
    shutil.move(pki.ca_key, out / "ca" / "ca.key")  # the CA's key stays off every host
    if data:
        from nodes.scenario import generate

        generate("iwamizawa", out / "data", years=years or [2019])
    settings = load_settings(data_dir=out / "coordinator" / "data")
    store = open_store(settings)
    operator = out / "operator"
    write_token(operator / "operator", bootstrap_operator(store).token)
    url = f"https://{host}:{api_port}"
    configs = []
    for name in holders:
        folder = out / "nodes" / name
        own = Pki(folder / "pki")
        own.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy(pki.ca_cert, own.ca_cert)
        key = create_node_key(own, name)
        init_node(folder / "state", name, policies / f"{name}.toml")
        consents = out / "data" / name / "consents.csv"
        if consents.is_file():
            import_consents(EnforcementPoint(name, folder / "state"), consents)
        store.register_node(NodeCreate(name=name))
        store.set_supernode_key(name, key.public_key.read_text(encoding="utf-8").strip())
        write_token(folder / "secrets" / "service-token", store.issue_service_token(name).token)
        admin = store.create_principal(
            PrincipalCreate(name=f"{name}-admin", role="node_admin", node=name)  # type: ignore[arg-type]
        )[1]
        write_token(folder / "secrets" / "admin-token", admin.token)
        config = folder / "node.toml"
        config.write_text(
            _node_toml(name, url, f"{host}:{superlink_port}", f"../../data/{name}"),
            encoding="utf-8",
        )
        configs.append(config)
    store.register_organisation(
        OrganisationCreate(
            name=ORGANISATION,
            type="academic",
            projects=[ProjectCreate(name=PROJECT)],
        )
    )
    researcher = store.create_principal(
        PrincipalCreate(name="researcher", role="researcher", organisation=ORGANISATION)  # type: ignore[arg-type]
    )[1]
    write_token(operator / "researcher", researcher.token)
    shutil.copy(pki.ca_cert, operator / "ca.pem")
    return configs


@app.command("init")
def init_cmd(
    out: Annotated[Path, typer.Option(help="The folder to lay the consortium out in.")],
    host: Annotated[
        str, typer.Option(help="The coordinator's host name (its certificate names it).")
    ] = "coordinator",
    holder: Annotated[
        list[str] | None,
        typer.Option("--holder", help="A holder (repeat; default the six Iwamizawa holders)."),
    ] = None,
    policies: Annotated[
        Path | None,
        typer.Option(help="Folder of NAME.toml policies (default: the Iwamizawa examples)."),
    ] = None,
    years: Annotated[
        list[int] | None, typer.Option("--year", help="Scenario years (default 2019).")
    ] = None,
    no_data: Annotated[
        bool, typer.Option("--no-data", help="Do not generate the synthetic data.")
    ] = False,
    port: Annotated[int, typer.Option(help="The coordinator's API port.")] = 8750,
    superlink_port: Annotated[int, typer.Option(help="The SuperLink's port.")] = 9092,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave a consortium already in OUT as it is (exit 0)."),
    ] = False,
) -> None:
    """Lay out a consortium (coordinator, nodes, PKI, tokens) for services started elsewhere."""
    from hamanasu.demo import EXAMPLES

    if keep and (out / "coordinator").exists():
        typer.echo(f"{out} holds a consortium already; left as it is")
        return
    try:
        configs = init_consortium(
            out,
            host,
            tuple(holder or HOLDERS),
            policies=policies or EXAMPLES / "policies",
            years=years,
            data=not no_data,
            api_port=port,
            superlink_port=superlink_port,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"coordinator: {out / 'coordinator'} (certificate for {host})")
    for config in configs:
        typer.echo(f"node: {config}")
    typer.echo(f"tokens: {out / 'operator'}; the CA's key: {out / 'ca' / 'ca.key'} (keep offline)")


def register(root: typer.Typer) -> None:
    """Add ``consortium`` to the top-level app."""
    root.add_typer(app, name="consortium", help="Lay out a consortium's hosts on disk.")
