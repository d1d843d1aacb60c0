"""The ``hamanasu`` command: one Typer app whose groups come from the packages.

Each package owns its CLI group (``consent.cli``, ``nodes.cli``, ...); this module only
mounts them, and is the one place that wires the ServerApp and the ClientApp together:
for an embedded run (``demo`` and ``simulate``) and, through the Flower app beside it
(:data:`hamanasu.FLOWER_APP_DIR`), for the coordinator's deployment engine.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from typing import Annotated

import click
import typer
from rich.markup import escape

from hamanasu import FLOWER_APP_DIR
from hamanasu.errors import UsageError

app = typer.Typer(
    name="hamanasu",
    help="Privacy-preserving federated data sharing for a city health consortium.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    """Print the installed version and exit, for ``--version``."""
    if value:
        typer.echo(f"hamanasu {importlib.metadata.version('hamanasu')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Privacy-preserving federated data sharing for a city health consortium."""
    # the commands that start a coordinator's Flower engine submit this app
    ctx.ensure_object(dict).setdefault("flower_app", FLOWER_APP_DIR)


def _escape_help(command: click.Command) -> None:
    """Escape Rich markup in every help text below ``command``, in place.

    Help texts name TOML tables such as ``[node.admin]``, which Rich would otherwise
    swallow as markup tags.
    """
    if command.help:
        command.help = escape(command.help)
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            param.help = escape(text)  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _escape_help(sub)


@functools.cache
def command() -> click.Command:
    """Return the whole ``hamanasu`` CLI as one click command, every group mounted."""
    _mount()
    root = typer.main.get_command(app)
    _escape_help(root)
    return root


def _mount() -> None:
    """Mount every package's command group on the top-level app."""
    from hamanasu.consortium import register as register_consortium
    from hamanasu.embedded import register as register_embedded
    from hamanasu.up import register as register_up

    register_embedded(app)
    register_up(app)
    register_consortium(app)
    groups = (
        ("consent.cli", "audit", "Verify consent ledgers and job usage."),
        ("nodes.cli", "node", "Run and administer a data holder's node."),
        ("coordinator.cli", "coordinator", "Run and administer the coordinator."),
        ("coordinator.cli:job_app", "job", "Submit and follow federated jobs."),
        ("federation.pki_cli", "pki", "Issue the federation's CA, TLS certificate and node keys."),
        ("nodes.scenario.cli", "scenario", "Generate the synthetic Iwamizawa scenario's data."),
    )
    for module, name, text in groups:
        module, _, attr = module.partition(":")
        sub = getattr(importlib.import_module(module), attr or "app")
        app.add_typer(sub, name=name, help=text)


def main(argv: list[str] | None = None) -> None:
    """Run the ``hamanasu`` command line.

    Bad input ends with one line on stderr naming what is wrong and exit code 2.

    Raises:
        SystemExit: always, with the command's exit code.
    """
    try:
        command()(args=argv, standalone_mode=True)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
