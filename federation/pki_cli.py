"""``hamanasu pki ...``: the operator's CA, the SuperLink certificate and SuperNode keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from federation.pki import DEFAULT_HOSTS, Pki, create_node_key, init_pki

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True, help="Issue the federation's CA, TLS certificate and node keys."
)

PkiDir = Annotated[Path, typer.Option("--dir", help="The PKI folder (private keys 0600 under it).")]


@app.command("init")
def init_cmd(
    folder: PkiDir,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="An address the SuperLink is reached at "
            "(repeat; default 127.0.0.1 and localhost).",
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="Validity in days.")] = 825,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing CA.")] = False,
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node",
            help="Also create this node's SuperNode key pair (repeat), for a consortium "
            "whose operator hands out the keys.",
        ),
    ] = None,
) -> None:
    """Create the CA and the coordinator's TLS certificate (SuperLink and API; SAN = --host)."""
    try:
        for name in node or []:
            Pki(folder).node(name)  # refuse a bad name before anything is written
        pki = init_pki(folder, tuple(host or DEFAULT_HOSTS), days=days, overwrite=force)
        keys = [create_node_key(pki, name, overwrite=force) for name in node or []]
    except (FileExistsError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(
        f"CA {pki.ca_cert}\nSuperLink certificate {pki.server_cert} "
        f"for {', '.join(host or DEFAULT_HOSTS)}"
    )
    for key in keys:
        typer.echo(f"node key {key.private_key} (0600), public {key.public_key}")


@app.command("node-key")
def node_key_cmd(
    name: Annotated[str, typer.Argument(help="The node's name, e.g. city-hospital.")],
    folder: PkiDir,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Create a node's ECDSA P-384 SuperNode key pair (OpenSSH).

    Register the ``.pub`` with the SuperLink.
    """
    try:
        key = create_node_key(Pki(folder), name, overwrite=force)
    except (FileExistsError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"private key {key.private_key} (0600)\npublic key {key.public_key}")
