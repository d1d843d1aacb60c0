"""``coordinator serve --engine deployment`` and the SuperNode-key commands refuse bad input in
one line with exit code 2, and never echo a private key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HAMANASU = [sys.executable, "-m", "hamanasu", "coordinator"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAMANASU, *args], capture_output=True, text=True, timeout=120)


def test_serve_deployment_without_a_pki_says_so(tmp_path: Path) -> None:
    out = _run(
        "serve",
        "--data-dir",
        str(tmp_path / "c"),
        "--engine",
        "deployment",
        "--pki-dir",
        str(tmp_path / "no-pki"),
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "pki_dir" in out.stderr
    assert not (tmp_path / "c" / "flower" / "superlink.pid").exists()


def test_serve_unknown_engine_is_refused(tmp_path: Path) -> None:
    out = _run("serve", "--data-dir", str(tmp_path / "c"), "--engine", "warp")
    assert out.returncode == 2 and "engine" in out.stderr


def test_node_key_refuses_a_private_key_without_echoing_it(tmp_path: Path) -> None:
    from federation.pki import Pki, create_node_key

    key = create_node_key(Pki(tmp_path / "pki"), "n1")
    token = tmp_path / "token"
    token.write_text("hmn_x_y\n")
    token.chmod(0o600)
    out = _run(
        "node-key",
        "n1",
        str(key.private_key),
        "--url",
        "http://127.0.0.1:9",
        "--token-file",
        str(token),
    )
    secret = key.private_key.read_text()
    assert out.returncode == 2 and "is a private key" in out.stderr
    assert secret.splitlines()[1] not in out.stderr + out.stdout
