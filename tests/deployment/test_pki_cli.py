"""``hamanasu pki init`` / ``node-key``: files, permissions, refusals with exit code 2."""

import stat
import subprocess
import sys

HAMANASU = [sys.executable, "-m", "hamanasu", "pki"]


def test_pki_cli_init_and_node_key(tmp_path):
    folder = tmp_path / "pki"
    ok = subprocess.run(
        [
            *HAMANASU,
            "init",
            "--dir",
            str(folder),
            "--host",
            "127.0.0.1",
            "--host",
            "coordinator.example",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (folder / "ca.pem").exists() and (folder / "superlink.pem").exists()
    again = subprocess.run(
        [*HAMANASU, "init", "--dir", str(folder)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "exists already" in again.stderr
    key = subprocess.run(
        [*HAMANASU, "node-key", "women-clinic", "--dir", str(folder)],
        capture_output=True,
        text=True,
    )
    assert key.returncode == 0, key.stderr
    private = folder / "nodes" / "women-clinic" / "supernode_p384"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in key.stdout  # paths only, never key material
    bad = subprocess.run(
        [*HAMANASU, "node-key", "../x", "--dir", str(folder)], capture_output=True, text=True
    )
    assert bad.returncode == 2
