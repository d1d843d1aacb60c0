"""The Flower app ships as a Flower app: `flwr build` bundles it, naming both components,
and the coordinator submits that same bundle with the run config its ServerApp reads."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from coordinator.flower_control import FlowerApp, FlowerControl
from coordinator.flower_server import RUN_CONFIG_DEFAULTS
from hamanasu import FLOWER_APP_DIR

FLWR = Path(sys.executable).parent / "flwr"


def _bundled_pyproject(fab: bytes, folder: Path) -> dict:
    path = folder / "app.fab"
    path.write_bytes(fab)
    with zipfile.ZipFile(path) as zf:
        return tomllib.loads(zf.read("pyproject.toml").decode())


def test_flwr_build_bundles_the_app_with_both_components(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(FLWR), "build", "--app", str(FLOWER_APP_DIR)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    [fab] = tmp_path.glob("hamanasu.hamanasu-federated.*.fab")
    bundled = _bundled_pyproject(fab.read_bytes(), tmp_path)
    assert bundled["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "coordinator.flower_server:app",
        "clientapp": "nodes.flower_client:app",
    }
    # the coordinator's bundle is byte for byte what `flwr build` writes
    assert FlowerApp.load(FLOWER_APP_DIR).fab == fab.read_bytes()


def test_the_app_declares_exactly_the_run_config_its_server_app_reads() -> None:
    app = FlowerApp.load(FLOWER_APP_DIR)
    assert dict(app.config) == RUN_CONFIG_DEFAULTS
    assert app.fab_id == "hamanasu/hamanasu-federated"
    assert set(app.components) == {"serverapp", "clientapp"}


def test_a_folder_without_a_pyproject_is_not_an_app(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pyproject.toml"):
        FlowerApp.load(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    with pytest.raises(ValueError):
        FlowerApp.load(tmp_path)


def test_start_run_refuses_a_key_the_app_does_not_declare(tmp_path: Path) -> None:
    from federation.pki import init_pki

    app = FlowerApp.load(FLOWER_APP_DIR)
    pki = init_pki(tmp_path / "pki")
    with (
        FlowerControl("127.0.0.1:9", pki.ca_cert) as ctl,
        pytest.raises(KeyError, match="no-such-key"),
    ):
        ctl.start_run(app, {"job-id": "j1", "no-such-key": 1})
