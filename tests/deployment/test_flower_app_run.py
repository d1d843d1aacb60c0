"""A Flower user runs Hamanasu's Flower app with Flower's own `flwr run`, against a real
SuperLink (TLS, its loopback Control API), and the SuperLink runs the very bundle the
coordinator submits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_deployment import LocalDeployment  # noqa: E402

from coordinator.flower_control import FlowerApp  # noqa: E402
from hamanasu import FLOWER_APP_DIR  # noqa: E402

FLWR = Path(sys.executable).parent / "flwr"


@pytest.mark.slow
def test_flwr_run_submits_the_app_the_coordinator_submits(tmp_path: Path) -> None:
    with LocalDeployment(tmp_path / "dep") as dep:
        assert dep.superlink is not None
        home = tmp_path / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            "[superlink]\n"
            'default = "consortium"\n\n'
            "[superlink.consortium]\n"
            f'address = "{dep.superlink.control_address}"\n'
            f'root-certificates = "{dep.pki.ca_cert}"\n'
        )
        env = {
            **os.environ,
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
        }
        out = subprocess.run(
            [
                str(FLWR),
                "run",
                str(FLOWER_APP_DIR),
                "consortium",
                "--run-config",
                'job-id="by-hand" start-timeout=1.0',
                "--format",
                "json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        answer = json.loads(out.stdout)
        assert answer["success"] is True, answer
        run_id = int(answer["run-id"])
        with dep.control() as ctl:
            info = ctl.run(run_id)
            assert info.fab_hash == FlowerApp.load(FLOWER_APP_DIR).fab_hash
            ctl.stop_run(run_id)
