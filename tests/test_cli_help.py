"""Every command of the ``hamanasu`` CLI answers ``--help`` (flwr's cli_test habit)."""

import click
import pytest
import typer
from typer.testing import CliRunner

from hamanasu.cli import _mount, app

_mount()
ROOT = typer.main.get_command(app)


def _paths(command: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            out += _paths(sub, (*prefix, name))
    return out


@pytest.mark.parametrize("path", _paths(ROOT), ids=lambda p: " ".join(p) or "hamanasu")
def test_every_command_has_help(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_demo_and_simulate_are_mounted():
    names = set(ROOT.commands)
    assert {"demo", "simulate"} <= names
