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
from collections.abc import Iterable
from typing import Annotated

import click
import typer
from rich.markup import escape

from hamanasu import FLOWER_APP_DIR
from hamanasu.errors import UsageError


def _new_app() -> typer.Typer:
    """Return the top-level app, its ``--version`` callback set and no group mounted."""
    root = typer.Typer(
        name="hamanasu",
        help="Privacy-preserving federated data sharing for a city health consortium.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    root.callback()(_root)
    return root


def _print_version(value: bool) -> None:
    """Print the installed version and exit, for ``--version``."""
    if value:
        typer.echo(f"hamanasu {importlib.metadata.version('hamanasu')}")
        raise typer.Exit()


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


app = _new_app()


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


#: Each package's command group: its module (``module:attribute``, ``app`` by default)
#: and its help line. ``main`` imports only the group a command line names.
GROUPS = {
    "audit": ("consent.cli", "Verify consent ledgers and job usage."),
    "node": ("nodes.cli", "Run and administer a data holder's node."),
    "coordinator": ("coordinator.cli", "Run and administer the coordinator."),
    "job": ("coordinator.cli:job_app", "Submit and follow federated jobs."),
    "pki": ("federation.pki_cli", "Issue the federation's CA, TLS certificate and node keys."),
    "scenario": ("nodes.scenario.cli", "Generate the synthetic Iwamizawa scenario's data."),
}


@functools.cache
def command() -> click.Command:
    """Return the whole ``hamanasu`` CLI as one click command, every group mounted."""
    _mount()
    return _click(app)


def _click(root: typer.Typer) -> click.Command:
    """Return ``root`` as a click command, Rich markup in its help texts escaped."""
    built = typer.main.get_command(root)
    _escape_help(built)
    return built


def _mount(root: typer.Typer | None = None, groups: Iterable[str] = GROUPS) -> None:
    """Mount this package's commands and the package command groups on ``root``.

    Args:
        root: the app to mount them on (the top-level :data:`app` by default).
        groups: the names in :data:`GROUPS` to mount (all by default). This package's
            own commands (``demo``, ``simulate``, ``up``, ``consortium``) import nothing
            heavy and are always mounted.
    """
    from hamanasu.consortium import register as register_consortium
    from hamanasu.embedded import register as register_embedded
    from hamanasu.up import register as register_up

    root = app if root is None else root
    register_embedded(root)
    register_up(root)
    register_consortium(root)
    for name in groups:
        module, text = GROUPS[name]
        module, _, attr = module.partition(":")
        sub = getattr(importlib.import_module(module), attr or "app")
        root.add_typer(sub, name=name, help=text)


def _command_for(argv: list[str] | None) -> click.Command:
    """Return the CLI for this command line, mounting only the group it names.

    A new interpreter then imports one package's CLI, or none for this package's own
    commands, rather than all of them (pandas, SciPy and httpx come with some).
    Anything else (``--help``, ``--version``, a typo to suggest a correction for) gets
    the whole CLI.
    """
    args = sys.argv[1:] if argv is None else argv
    first = args[0] if args else ""
    if first in GROUPS:
        return _partial_command(first)
    own = _partial_command()
    if first in getattr(own, "commands", {}):
        return own
    return command()


@functools.cache
def _partial_command(*groups: str) -> click.Command:
    """Return the CLI with only these of :data:`GROUPS` mounted (and this package's own)."""
    root = _new_app()
    _mount(root, groups)
    return _click(root)


def main(argv: list[str] | None = None) -> None:
    """Run the ``hamanasu`` command line.

    Bad input ends with one line on stderr naming what is wrong and exit code 2.

    Raises:
        SystemExit: always, with the command's exit code.
    """
    try:
        _command_for(argv)(args=argv, standalone_mode=True)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
