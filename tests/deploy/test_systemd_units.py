"""The systemd units in deploy/systemd: hardened, verified by systemd-analyze, and their exact
commands and environment run (paths moved to a temporary root) as an unprivileged user:
the coordinator answers /healthz and /readyz with its SuperLink up, the node service is
ready and its SuperNode online at the coordinator.

Run as root, the services run as ``nobody`` (setpriv, no new privileges); where this
machine's Python sits in root's home, with CAP_DAC_READ_SEARCH alone so that user can exec
it (reading, never writing, what it does not own: see deploy_services.needs_search_cap).
Run as another user, they run as that user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_services import (  # noqa: E402
    HAMANASU,
    free_port,
    http_ok,
    other_user,
    run,
    start,
    stop,
    stop_flower_left_by,
    wait_until,
)
from units import UNITS, Unit, units  # noqa: E402

SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


def test_both_services_have_a_unit() -> None:
    assert set(units()) == {"hamanasu-coordinator", "hamanasu-node"}


@pytest.mark.parametrize("name", ["hamanasu-coordinator", "hamanasu-node"])
def test_unit_is_hardened_and_takes_secrets_as_credentials(name: str) -> None:
    unit = units()[name]
    assert unit.one("User") == "hamanasu" and unit.one("Group") == "hamanasu"
    assert unit.one("NoNewPrivileges") == "yes"
    assert unit.one("ProtectSystem") == "strict"
    state = f"/var/lib/{unit.one('StateDirectory')}"
    assert unit.one("ReadWritePaths") == state == unit.one("WorkingDirectory")
    assert unit.one("CapabilityBoundingSet") == "" and unit.one("PrivateTmp") == "yes"
    creds = unit.credentials()
    assert creds, "secrets come in through LoadCredential="
    env = unit.environment(Path("/run/credentials") / f"{name}.service")
    for key in env:
        if any(w in key for w in SECRET_WORDS):
            assert key.endswith(("_FILE", "_KEYFILE")), f"{key} holds a value, not a file"
    secret_files = [v for k, v in env.items() if k.endswith(("TOKEN_FILE", "_KEYFILE", "PASSWORD_FILE"))]
    assert secret_files and all(v.startswith(f"/run/credentials/{name}.service/") for v in secret_files)
    assert {Path(v).name for v in secret_files} <= set(creds)


@pytest.mark.parametrize("name", ["hamanasu-coordinator", "hamanasu-node"])
def test_unit_runs_a_real_hamanasu_command(name: str) -> None:
    argv = units()[name].exec_start()
    assert argv[0] == "/opt/hamanasu/venv/bin/hamanasu"
    out = run(*argv[1:], "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage: " in out.stdout


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    user = "nobody" if _exists("nobody") else pwd.getpwuid(os.getuid()).pw_name
    hamanasu = shutil.which("hamanasu") or str(Path(sys.executable).parent / "hamanasu")
    paths = []
    for path in UNITS.glob("*.service"):
        text = path.read_text().replace("/opt/hamanasu/venv/bin/hamanasu", hamanasu)
        text = text.replace("User=hamanasu", f"User={user}").replace("Group=hamanasu", "Group=")
        (tmp_path / path.name).write_text(text)
        paths.append(str(tmp_path / path.name))
    out = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, timeout=600)
    problems = [
        line for line in out.stderr.splitlines()
        if "Special user nobody" not in line and "Group=" not in line
    ]
    assert out.returncode == 0 and not problems, out.stderr


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


# -- the units' commands, run ---------------------------------------------------------------------
def _moved(value: str, root: Path) -> str:
    for prefix in ("/var/lib/hamanasu", "/etc/hamanasu", "/srv/hamanasu", "/run/credentials"):
        value = value.replace(prefix, f"{root}{prefix}")
    return value


def _service_env(unit: Unit, root: Path, owner: tuple[int, int], overrides: dict[str, str]) -> dict[str, str]:
    """The unit's environment under ``root``: credentials copied as systemd does (0400, the
    service user's), then the EnvironmentFile= overrides."""
    creds = root / "run" / "credentials" / f"{unit.name}"
    creds.mkdir(parents=True)
    for name, source in unit.credentials().items():
        shutil.copy(_moved(source, root), creds / name)
        os.chmod(creds / name, 0o400)
        os.chown(creds / name, *owner)
    os.chown(creds, *owner)
    os.chmod(creds, 0o500)
    env = {k: _moved(v, root) for k, v in unit.environment(Path("/run/credentials") / unit.name).items()}
    base = {k: v for k, v in os.environ.items() if not k.startswith("HAMANASU_")}
    return {**base, **env, **overrides, "HOME": str(root)}


def _argv(unit: Unit) -> list[str]:
    argv = unit.exec_start()
    assert argv[0] == "/opt/hamanasu/venv/bin/hamanasu"
    return [*HAMANASU, *argv[1:]]


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


@pytest.mark.slow
def test_units_commands_run_as_an_unprivileged_user_and_answer_health_checks() -> None:
    user = other_user()
    owner = (pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid) if user else (os.getuid(), os.getgid())
    assert owner[0] != 0, "the services must not run as root"
    root = Path(tempfile.mkdtemp(prefix="hamanasu-units-"))
    os.chmod(root, 0o755)
    procs = []
    try:
        out = run("consortium", "init", "--out", str(root / "cons"), "--host", "localhost",
                  "--holder", "city-hospital", "--no-data")
        assert out.returncode == 0, out.stderr
        # what docs/deployment.md has the operator put where
        var, etc = root / "var/lib/hamanasu", root / "etc/hamanasu"
        (etc / "credentials").mkdir(parents=True, mode=0o700)
        (etc / "coordinator").mkdir()
        shutil.copytree(root / "cons/coordinator", var / "coordinator")
        shutil.copy(var / "coordinator/pki/superlink.pem", etc / "coordinator/api.pem")
        shutil.copy(var / "coordinator/pki/private/superlink.key", etc / "credentials/api-tls.key")
        shutil.copytree(root / "cons/nodes/city-hospital", var / "node")
        for token in ("service", "admin"):
            shutil.move(var / f"node/secrets/{token}-token", etc / f"credentials/node-{token}-token")
        (root / "srv/hamanasu/data").mkdir(parents=True)
        for path in [var, *var.rglob("*")]:
            os.chown(path, *owner)
        for path in [root / "var", root / "var/lib"]:
            os.chmod(path, 0o755)
        api, fleet = free_port(), free_port()
        unit = units()
        coord_env = _service_env(unit["hamanasu-coordinator"], root, owner, {
            "HAMANASU_HOST": "127.0.0.1", "HAMANASU_PORT": str(api),
            "HAMANASU_SUPERLINK_HOST": "127.0.0.1", "HAMANASU_SUPERLINK_PORT": str(fleet),
        })
        assert coord_env["HAMANASU_SSL_KEYFILE"].startswith(str(root / "run/credentials"))
        log = root / "coordinator.log"
        url = f"https://localhost:{api}"
        ca = str(var / "coordinator/pki/ca.pem")
        procs.append(start(_argv(unit["hamanasu-coordinator"]), coord_env, log, user))
        wait_until(lambda: http_ok(f"{url}/readyz", ca), "coordinator", procs[0], log, timeout=600)
        assert httpx.get(f"{url}/healthz", verify=ca).json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz", verify=ca).json()["checks"] == {"database": "ok", "superlink": "ok"}
        node_env = _service_env(unit["hamanasu-node"], root, owner, {
            "HAMANASU_NODE_COORDINATOR_URL": url,
            "HAMANASU_NODE_SUPERNODE__SUPERLINK": f"localhost:{fleet}",
            "HAMANASU_NODE_POLL_INTERVAL": "0.5",
        })
        nlog = root / "node.log"
        procs.append(start(_argv(unit["hamanasu-node"]), node_env, nlog, user))
        # wait on the heartbeat the service writes (the check `hamanasu node health` makes,
        # in this process), then ask the real command once
        from nodes.health import check_status

        status = var / "node" / "state" / "service-status.json"
        wait_until(lambda: check_status(status, max_age=60.0, ready=True).ok, "node", procs[1], nlog,
                   timeout=600)
        health = [*HAMANASU, "node", "health", "--ready"]
        check = subprocess.run(health, env=node_env, capture_output=True, text=True, timeout=600)
        assert check.returncode == 0, check.stderr
        op = httpx.Client(base_url=url, verify=ca, headers={
            "Authorization": f"Bearer {(root / 'cons/operator/operator').read_text().strip()}"})

        def online() -> bool:
            nodes = {n["name"]: n for n in op.get("/nodes").json()}
            return bool(nodes["city-hospital"].get("supernode_online"))

        wait_until(online, "SuperNode", procs[1], nlog, timeout=600)
        for proc in procs:
            assert _uid_of(proc.pid) == owner[0]
        assert not any(p.stat().st_uid == 0 for p in (var / "node/state").rglob("*"))
    finally:
        for proc in reversed(procs):
            stop(proc)
        stop_flower_left_by(root)
        shutil.rmtree(root, ignore_errors=True)
