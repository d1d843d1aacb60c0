"""Service settings come from files and the environment; every secret from a 0600 file.

A secret given as a value (environment variable, config-file value) is refused with one
line naming the setting to use; a key or password file others can read is refused.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_services import run  # noqa: E402

from coordinator.errors import SettingsError  # noqa: E402
from coordinator.settings import load_settings  # noqa: E402
from nodes.settings import NodeServiceError, load_node_config  # noqa: E402


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_coordinator_database_password_comes_from_a_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = _private(tmp_path / "db-password", "s3cret-pw\n")
    monkeypatch.setenv("HAMANASU_DATABASE_PASSWORD_FILE", str(pw))
    settings = load_settings(data_dir=tmp_path / "c", database_url="postgresql+psycopg://hamanasu@db/hamanasu")
    assert settings.url() == "postgresql+psycopg://hamanasu:s3cret-pw@db/hamanasu"
    assert "s3cret-pw" not in settings.safe_url() and "s3cret-pw" not in repr(settings)
    os.chmod(pw, 0o644)
    with pytest.raises(SettingsError, match=r"^database_password_file: .* is readable by others; chmod 600 it"):
        load_settings(data_dir=tmp_path / "c")


def test_coordinator_refuses_a_password_as_a_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMANASU_DATABASE_PASSWORD", "s3cret-pw")
    with pytest.raises(SettingsError) as err:
        load_settings(data_dir=tmp_path / "c")
    assert err.value.field == "database_password"
    assert "HAMANASU_DATABASE_PASSWORD" in str(err.value) and "database_password_file" in str(err.value)
    assert "s3cret-pw" not in str(err.value)
    monkeypatch.delenv("HAMANASU_DATABASE_PASSWORD")
    toml = tmp_path / "c.toml"
    toml.write_text('[coordinator]\ndatabase_password = "s3cret-pw"\n')
    with pytest.raises(SettingsError, match=r"^database_password: a secret is never taken as a config value"):
        load_settings(toml)
    # the command line says so in one line, exit 2
    out = run("coordinator", "init", "--config", str(toml), "--data-dir", str(tmp_path / "c"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: database_password: ") and "s3cret-pw" not in out.stderr


def test_coordinator_refuses_a_tls_key_others_can_read(tmp_path: Path) -> None:
    cert = _private(tmp_path / "c.pem", "cert", 0o644)
    key = _private(tmp_path / "c.key", "key", 0o640)
    with pytest.raises(SettingsError, match=r"^ssl_keyfile: .*c.key is readable by others"):
        load_settings(ssl_certfile=cert, ssl_keyfile=key)
    os.chmod(key, 0o600)
    assert load_settings(ssl_certfile=cert, ssl_keyfile=key).ssl_keyfile == key


def _toml(tmp: Path, extra: str = "") -> Path:
    path = tmp / "node.toml"
    path.write_text(
        '[node]\nname = "city"\ncoordinator_url = "https://coordinator:8750"\n'
        f'state_dir = "state"\ntoken_file = "service.token"\npoll_interval = 5\n{extra}'
    )
    return path


def test_node_settings_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("HAMANASU_NODE_")]:
        monkeypatch.delenv(key)
    config = load_node_config(_toml(tmp_path))
    assert (config.name, config.poll_interval) == ("city", 5.0)
    assert config.token_file == tmp_path / "service.token"  # relative to the file
    monkeypatch.setenv("HAMANASU_NODE_POLL_INTERVAL", "2.5")
    monkeypatch.setenv("HAMANASU_NODE_SUPERNODE__SUPERLINK", "coordinator:9092")
    monkeypatch.setenv("HAMANASU_NODE_SUPERNODE__PKI_DIR", "/var/lib/hamanasu/pki")
    config = load_node_config(_toml(tmp_path))
    assert config.poll_interval == 2.5  # the environment wins over the file
    assert config.supernode is not None and config.supernode.superlink == "coordinator:9092"
    # a container: the environment alone
    for key, value in {
        "NAME": "dairy",
        "COORDINATOR_URL": "https://coordinator:8750",
        "STATE_DIR": "/var/lib/hamanasu/state",
        "TOKEN_FILE": "/var/lib/hamanasu/secrets/service-token",
    }.items():
        monkeypatch.setenv(f"HAMANASU_NODE_{key}", value)
    config = load_node_config(None)
    assert (config.name, config.state_dir) == ("dairy", Path("/var/lib/hamanasu/state"))
    monkeypatch.setenv("HAMANASU_NODE_CONFIG", str(_toml(tmp_path)))
    assert load_node_config(None).poll_interval == 2.5 and load_node_config(None).name == "dairy"
    monkeypatch.delenv("HAMANASU_NODE_NAME")
    assert load_node_config(None).name == "city"


def test_node_refuses_tokens_as_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NodeServiceError, match=r"^token: a secret is never taken as a config value .*set token_file$"):
        load_node_config(_toml(tmp_path, 'token = "hmn_abc_def"\n'))
    monkeypatch.setenv("HAMANASU_NODE_ADMIN_TOKEN", "hmn_abc_def")
    with pytest.raises(NodeServiceError, match=r"^admin_token: .*HAMANASU_NODE_ADMIN_TOKEN.*set admin_token_file$"):
        load_node_config(_toml(tmp_path))


def test_node_serve_refuses_secrets_as_values_in_one_line(tmp_path: Path) -> None:
    from federation.api_client import write_token

    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMANASU_")}
    config = _toml(tmp_path).read_text().replace('token_file = "service.token"\n', "")
    (tmp_path / "bare.toml").write_text(config)
    out = run("node", "serve", "--config", str(tmp_path / "bare.toml"), env={**env, "HAMANASU_TOKEN": "hmn_abc_def"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: token_file: the node service reads its token from a 0600 file")
    out = run("node", "serve", "--config", str(_toml(tmp_path)), env={**env, "HAMANASU_NODE_TOKEN": "hmn_abc_def"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "hmn_abc_def" not in out.stderr
    assert out.stderr.startswith("error: token: a secret is never taken as an environment variable")
    write_token(tmp_path / "service.token", "hmn_abc_def")
    os.chmod(tmp_path / "service.token", 0o644)
    out = run("node", "serve", "--config", str(_toml(tmp_path)), env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "hmn_abc_def" not in out.stderr
    assert "service.token is readable by others; chmod 600 it" in out.stderr
