"""Every command of the ``hamanasu`` CLI answers ``--help`` with each parameter's help.

flwr's cli_test habit, plus what a new user trips over: argument help that a click
upgrade drops, TOML table names that Rich markup swallows, a suggestion printed twice.
"""

import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from hamanasu.cli import _command_for, command

ROOT = command()


def _paths(cmd: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            out += _paths(sub, (*prefix, name))
    return out


def _resolve(path: tuple[str, ...]) -> click.Command:
    cmd = ROOT
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return cmd


def _flat(text: str) -> str:
    """The help screen as words: box drawing, escapes and line breaks removed."""
    text = re.sub(r"[│╭╮╰╯─\\]", " ", text)
    return " ".join(text.split())


PATHS = _paths(ROOT)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "hamanasu")
def test_help_shows_every_parameter_and_its_help(path):
    result = CliRunner().invoke(ROOT, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    screen = _flat(result.output)
    assert "Usage" in screen
    cmd = _resolve(path)
    for param in cmd.params:
        if param.name == "help":
            continue
        text = getattr(param, "help", None)
        assert text, f"{' '.join(path)}: {param.name} has no help text"
        plain = re.sub(r"\\\[", "[", text)
        assert _flat(plain) in screen, f"{' '.join(path)}: help of {param.name} not shown"


def test_table_names_in_help_survive_rich_markup():
    out = CliRunner().invoke(ROOT, ["node", "serve", "--help"], terminal_width=100).output
    assert "[node.supernode]" in out and "[node.admin]" in out
    out = CliRunner().invoke(ROOT, ["coordinator", "init", "--help"], terminal_width=100).output
    assert "[coordinator]" in out


def test_a_typo_suggests_once_and_exits_2():
    result = CliRunner().invoke(ROOT, ["nod"])
    assert result.exit_code == 2
    assert result.output.count("Did you mean 'node'?") == 1


def test_version():
    result = CliRunner().invoke(ROOT, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"hamanasu \d+\.\d+\.\d+\S*\n", result.output)


@pytest.mark.parametrize(
    "path",
    [p for p in PATHS if any(getattr(x, "name", "") == "fmt" for x in _resolve(p).params)],
    ids=" ".join,
)
def test_format_is_a_choice(path):
    result = CliRunner().invoke(ROOT, [*path, "--format", "yaml"])
    assert result.exit_code == 2
    assert "yaml" in result.output and "table" in result.output


def test_demo_and_simulate_are_mounted():
    assert {"demo", "simulate", "node", "coordinator", "job", "audit", "pki"} <= set(ROOT.commands)


def test_a_command_line_naming_a_group_imports_that_group_alone():
    # A new interpreter running `hamanasu audit ...` mounts the audit group only: the other
    # packages' CLIs (and what they import) are not loaded; the help screen is the same.
    code = (
        "import sys; from hamanasu.cli import GROUPS, _command_for; "
        "cmd = _command_for(['audit', 'verify']); "
        "print(sorted(cmd.commands)); "
        "print(sorted(m for m in {'nodes.cli', 'coordinator.cli', 'nodes.scenario.cli', 'scipy'} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mounted, loaded = out.stdout.splitlines()
    assert mounted == str(["audit", "consortium", "demo", "simulate", "up"])
    assert loaded == "[]"
    whole = CliRunner().invoke(ROOT, ["audit", "verify", "--help"], terminal_width=100).output
    alone = CliRunner().invoke(_command_for(["audit"]), ["audit", "verify", "--help"], terminal_width=100)
    assert alone.exit_code == 0 and alone.output == whole
