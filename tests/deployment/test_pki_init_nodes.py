"""``hamanasu pki init --node ...``: the CA, the certificate and each node's key pair at once."""

import stat
import subprocess
import sys

HAMANASU = [sys.executable, "-m", "hamanasu", "pki"]


def test_pki_init_creates_each_nodes_key(tmp_path):
    folder = tmp_path / "pki"
    out = subprocess.run(
        [*HAMANASU, "init", "--dir", str(folder), "--node", "city-hospital", "--node", "insurer"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    for name in ("city-hospital", "insurer"):
        private = folder / "nodes" / name / "supernode_p384"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert private.with_suffix(".pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert "PRIVATE KEY" not in out.stdout


def test_pki_init_bad_node_name_writes_nothing(tmp_path):
    folder = tmp_path / "pki"
    out = subprocess.run(
        [*HAMANASU, "init", "--dir", str(folder), "--node", "../evil"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert not (folder / "ca.pem").exists()
