"""docs/deployment.md (and the README's deployment section, which links it): every
``hamanasu`` command they show parses as the CLI would parse it,
and the "Trying it on one machine" block runs as written (ports moved to free ones): the
coordinator and two node services start from `hamanasu consortium init`'s layout, pass
their health checks, and a researcher lists jobs over HTTPS."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_services import free_port, stop_flower_left_by  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deployment.md").read_text()


def _blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """The ``hamanasu`` command lines of a shell block, as argument lists.

    ``hamanasu`` is the command where a top-level command follows it (elsewhere it names
    the service user).
    """
    from hamanasu.cli import command

    top = set(command().commands)  # type: ignore[attr-defined]
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.split(r"\s(?:>|&|;|\|\|?|&&)\s?", line.split("#")[0] + " ")[0]
        for part in re.split(r"\buntil |; do|\bdo ", line):
            words = shlex.split(part)
            if "client" in words and words[:2] == ["docker", "compose"]:
                words = ["hamanasu", *words[words.index("client") + 1 :]]  # its entrypoint
            heads = [
                i
                for i, w in enumerate(words[:-1])
                if (w == "hamanasu" or w.endswith("/bin/hamanasu")) and words[i + 1] in top
            ]
            if heads:
                out.append(words[heads[0] + 1 :])
    return out


def test_every_hamanasu_command_in_the_doc_parses() -> None:
    from hamanasu.cli import command

    root = command()
    readme = (ROOT / "README.md").read_text().split("### Deploying", 1)[1].split("\n## ", 1)[0]
    assert "docs/deployment.md" in readme
    commands = [c for block in _blocks(DOC) + _blocks(readme) for c in _commands(block)]
    assert len(commands) >= 15
    for argv in commands:
        ctx = root.make_context("hamanasu", list(argv), resilient_parsing=False)
        cmd: click.Command = root
        args = list(argv)
        while isinstance(cmd, click.Group) and args and args[0] in cmd.commands:
            cmd = cmd.commands[args.pop(0)]
        assert not isinstance(cmd, click.Group), f"hamanasu {' '.join(argv)}: not a command"
        with cmd.make_context(" ".join(argv[: len(argv) - len(args)]), args, parent=ctx):
            pass


def _one_machine_block() -> str:
    section = DOC.split("## Trying it on one machine", 1)[1]
    [block] = _blocks(section)
    return block


@pytest.mark.slow
def test_trying_it_on_one_machine_runs_as_written(tmp_path: Path) -> None:
    api, fleet = free_port(), free_port()
    script = _one_machine_block().replace("8750", str(api)).replace("9092", str(fleet))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMANASU_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(  # noqa: S603 - the doc's own commands
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the three services it left running
        proc.wait(timeout=60)
        stop_flower_left_by(tmp_path)
    logs = "".join(
        f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in (tmp_path / "consortium").glob("*.log")
    )
    assert proc.returncode == 0, output[-3000:] + logs
    assert "ok database=ok superlink=ok" in output
    for node in ("city-hospital", "women-clinic"):
        assert re.search(rf"^node {node}: ok: pid \d+, heartbeat .*SuperNode up$", output, re.M), output
    assert (tmp_path / "consortium" / "coordinator" / "data" / "coordinator.sqlite").is_file()
