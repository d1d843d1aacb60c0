"""``hamanasu consortium init`` lays out one folder per host, each with only what that host
needs; a second run refuses (or, with --keep, leaves everything as it is); the paths a
relative node.toml names become absolute (the SuperNode runs in a folder of its own)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_services import run  # noqa: E402


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_consortium_init_writes_one_folder_per_host(tmp_path: Path) -> None:
    from coordinator.api import open_store
    from coordinator.settings import load_settings
    from federation.pki import Pki
    from nodes.settings import load_node_config

    out = tmp_path / "c"
    args = ["consortium", "init", "--out", str(out), "--host", "coord.example",
            "--holder", "city", "--holder", "dairy", "--no-data"]
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert _mode(out / "ca" / "ca.key") == 0o600
    pki = Pki(out / "coordinator" / "pki")
    assert pki.can_serve() and not pki.ca_key.exists()  # the CA's key is kept off the host
    assert _mode(pki.server_key) == 0o600
    store = open_store(load_settings(data_dir=out / "coordinator" / "data"))
    assert {n.name for n in store.list_nodes()} == {"city", "dairy"}
    assert set(store.supernode_keys()) == {"city", "dairy"}
    for name in ("city", "dairy"):
        folder = out / "nodes" / name
        key = Pki(folder / "pki").node(name)
        assert _mode(key.private_key) == 0o600
        assert store.supernode_keys()[name] == key.public_key.read_text().strip()
        assert (folder / "pki" / "ca.pem").read_bytes() == pki.ca_cert.read_bytes()
        assert not (folder / "pki" / "nodes" / ("dairy" if name == "city" else "city")).exists()
        for token in ("service-token", "admin-token"):
            assert _mode(folder / "secrets" / token) == 0o600
        config = load_node_config(folder / "node.toml")
        assert config.coordinator_url == "https://coord.example:8750"
        assert config.supernode is not None and config.supernode.superlink == "coord.example:9092"
        assert config.token_file == (folder / "secrets" / "service-token").resolve()
        assert store.authenticate((folder / "secrets" / "service-token").read_text().strip()).node == name
    assert store.authenticate((out / "operator" / "researcher").read_text().strip()).role == "researcher"
    again = run(*args)
    assert again.returncode == 2 and again.stderr.strip() == f"error: --out: {out} holds a consortium already"
    kept = run(*args, "--keep")
    assert kept.returncode == 0 and "left as it is" in kept.stdout


def test_relative_node_config_paths_become_absolute(tmp_path: Path, monkeypatch) -> None:
    from nodes.settings import load_node_config

    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "node.toml").write_text(
        '[node]\nname = "a"\ncoordinator_url = "https://c:8750"\nstate_dir = "state"\n'
        '[node.supernode]\nsuperlink = "c:9092"\npki_dir = "pki"\n'
    )
    monkeypatch.chdir(tmp_path)
    config = load_node_config(Path("n/node.toml"))
    assert config.state_dir == tmp_path.resolve() / "n" / "state"
    assert config.supernode is not None and config.supernode.pki_dir.is_absolute()
    assert os.path.isabs(config.state_dir)
