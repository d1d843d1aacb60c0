"""The container files, checked without a Docker engine (none runs on the test machines):
deploy/docker/Dockerfile and deploy/docker/compose.yaml parsed; every command a service or
a HEALTHCHECK runs is a real ``hamanasu`` command (it answers --help); images run as a
non-root user; ports and volumes match the settings, `hamanasu consortium init`'s layout
and docs/deployment.md; every runtime dependency is pinned, torch to a CPU build."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from coordinator.settings import CoordinatorSettings
from hamanasu.consortium import HOLDERS

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Dockerfile stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", "", (DOCKER / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op == "FROM":
            current = rest.split(" AS ")[-1].strip()
            stages[current] = [("FROM", rest)]
        elif current:
            stages[current].append((op, rest))
    return stages


STAGES = _stages()


def _chain(stage: str) -> list[tuple[str, str]]:
    """The instructions that make ``stage``, from its first ancestor in this file."""
    instructions = STAGES[stage]
    parent = instructions[0][1].split(" AS ")[0].strip()
    return (_chain(parent) if parent in STAGES else []) + instructions


def _last(stage: str, op: str) -> str:
    return [rest for o, rest in _chain(stage) if o == op][-1]


def _env(stage: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, rest in _chain(stage):
        if op == "ENV":
            env.update(dict(item.split("=", 1) for item in rest.split()))
    return env


def _target(service: str) -> str:
    return SERVICES[service]["build"]["target"]


def test_the_compose_file_holds_the_coordinator_and_the_six_holders() -> None:
    policies = {p.stem for p in (ROOT / "examples" / "iwamizawa" / "policies").glob("*.toml")}
    assert set(HOLDERS) == policies
    assert set(SERVICES) == {"consortium-init", "coordinator", "client", *HOLDERS}
    for name in HOLDERS:
        assert _target(name) == "node"
    assert _target("coordinator") == _target("consortium-init") == "coordinator"


def test_every_command_is_a_real_hamanasu_command(hamanasu_in_process) -> None:
    commands = {name: svc["command"] for name, svc in SERVICES.items()}
    for stage in ("coordinator", "node"):
        assert json.loads(_last(stage, "ENTRYPOINT")) == ["hamanasu"]
        commands[f"{stage} image"] = json.loads(_last(stage, "CMD"))
        health = json.loads(_last(stage, "HEALTHCHECK").split("CMD", 1)[1])
        assert health[0] == "hamanasu"
        commands[f"{stage} healthcheck"] = health[1:]
    checked = set()
    for name, argv in commands.items():
        key = tuple(argv)
        if key in checked:
            continue
        # through the CLI's own entry point in this process: the command line is checked,
        # not the interpreter (the units' test starts the same commands as processes)
        out = hamanasu_in_process(*argv, "--help")
        assert out.returncode == 0, f"{name}: hamanasu {' '.join(argv)}: {out.stderr}"
        assert out.stdout.startswith("Usage: ") or "Usage: " in out.stdout
        checked.add(key)
    assert commands["coordinator image"] == ["coordinator", "serve"]
    assert commands["node image"] == ["node", "serve"]
    assert commands["coordinator healthcheck"] == ["coordinator", "health"]
    assert commands["node healthcheck"] == ["node", "health"]


def test_images_run_as_an_unprivileged_user() -> None:
    for stage in ("coordinator", "node"):
        users = [rest for op, rest in _chain(stage) if op == "USER"]
        assert users == ["hamanasu:hamanasu"], users
    useradd = " ".join(rest for op, rest in _chain("base") if op == "RUN")
    assert "useradd --system --uid 10001" in useradd and "--shell /usr/sbin/nologin" in useradd
    for name, svc in SERVICES.items():
        assert "user" not in svc, f"{name} overrides the image's user"
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]
        assert not svc.get("privileged", False)


def test_ports_match_the_settings_and_the_docs() -> None:
    defaults = CoordinatorSettings(data_dir=Path("x"))
    env = _env("coordinator")
    assert int(env["HAMANASU_PORT"]) == defaults.port == 8750
    assert int(env["HAMANASU_SUPERLINK_PORT"]) == defaults.superlink_port == 9092
    assert _last("coordinator", "EXPOSE").split() == ["8750", "9092"]
    assert [p.split("#")[0].strip() for p in SERVICES["coordinator"]["ports"]] == ["8750:8750", "9092:9092"]
    for name in (*HOLDERS, "consortium-init", "client"):
        assert "ports" not in SERVICES[name], f"{name} publishes a port; node services dial out only"
    assert not [op for op, _ in _chain("node") if op == "EXPOSE"]
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for port in ("8750", "9092"):
        assert f"| {port} |" in doc


def _mounts(service: str) -> dict[str, dict]:
    return {m["target"]: m for m in SERVICES[service]["volumes"]}


def test_each_service_mounts_only_its_own_part_of_the_consortium(tmp_path: Path) -> None:
    from hamanasu.consortium import init_consortium

    out = tmp_path / "consortium"
    init_consortium(out, "coordinator", HOLDERS, policies=ROOT / "examples/iwamizawa/policies", data=False)
    init = _mounts("consortium-init")
    command = SERVICES["consortium-init"]["command"]
    target = command[command.index("--out") + 1]
    assert list(init) == [target] and "volume" not in init[target]
    assert command[command.index("--host") + 1] == "coordinator" == SERVICES["coordinator"]["hostname"]
    coordinator = _mounts("coordinator")
    env = _env("coordinator")
    assert list(coordinator) == ["/var/lib/hamanasu/coordinator"]
    assert coordinator["/var/lib/hamanasu/coordinator"]["volume"]["subpath"] == "coordinator"
    for key in ("HAMANASU_DATA_DIR", "HAMANASU_PKI_DIR", "HAMANASU_SSL_CERTFILE", "HAMANASU_SSL_KEYFILE"):
        inside = Path(env[key]).relative_to("/var/lib/hamanasu/coordinator")
        assert (out / "coordinator" / inside).exists(), key
    assert not (out / "coordinator" / "pki" / "private" / "ca.key").exists()  # the CA key stays off
    node_env = _env("node")
    for name in HOLDERS:
        mounts = _mounts(name)
        assert set(mounts) == {"/var/lib/hamanasu/node", "/var/lib/hamanasu/data"}
        assert mounts["/var/lib/hamanasu/node"]["volume"]["subpath"] == f"nodes/{name}"
        assert mounts["/var/lib/hamanasu/data"]["volume"]["subpath"] == f"data/{name}"
        assert mounts["/var/lib/hamanasu/data"]["read_only"] is True
        assert not mounts["/var/lib/hamanasu/node"].get("read_only", False)
        config = Path(node_env["HAMANASU_NODE_CONFIG"]).relative_to("/var/lib/hamanasu/node")
        assert (out / "nodes" / name / config).is_file()
        assert node_env["HAMANASU_NODE_DATA_DIR"] == "/var/lib/hamanasu/data"
        table = tomllib.loads((out / "nodes" / name / config).read_text())["node"]
        assert table["coordinator_url"] == "https://coordinator:8750"
        assert table["supernode"]["superlink"] == "coordinator:9092"
        for key in ("token_file", "admin_token_file"):
            assert (out / "nodes" / name / table[key]).stat().st_mode & 0o777 == 0o600
        assert (out / "nodes" / name / "pki" / "nodes" / name / "supernode_p384").stat().st_mode & 0o777 == 0o600
    client = _mounts("client")
    assert client["/var/lib/hamanasu/operator"]["volume"]["subpath"] == "operator"
    assert (out / "operator" / "ca.pem").is_file() and (out / "operator" / "researcher").is_file()
    assert SERVICES["client"]["environment"]["HAMANASU_CA_FILE"] == "/var/lib/hamanasu/operator/ca.pem"


def test_nodes_wait_for_the_init_and_a_healthy_coordinator() -> None:
    for name in HOLDERS:
        deps = SERVICES[name]["depends_on"]
        assert deps["consortium-init"]["condition"] == "service_completed_successfully"
        assert deps["coordinator"]["condition"] == "service_healthy"
        assert SERVICES[name]["restart"] == "unless-stopped"
    assert "--keep" in SERVICES["consortium-init"]["command"]  # a second `up` keeps the keys


def test_every_runtime_dependency_is_pinned_and_torch_is_cpu() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = {}
    for line in (ROOT / "deploy" / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line}: not pinned"
            lock[canonicalize_name(name)] = version
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["postgres"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not pinned"
        assert req.specifier.contains(lock[name], prereleases=True), f"{req} vs {lock[name]}"
    assert lock["torch"].endswith("+cpu")
    assert not [n for n in lock if n.startswith("nvidia")]
    install = " ".join(rest for op, rest in _chain("build") if op == "RUN")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu --no-deps -r /tmp/requirements.lock" in install
    assert 'pip install --no-deps "openmined-psi==2.0.6"' in install
    makefile = (ROOT / "Makefile").read_text()
    assert '"openmined-psi==2.0.*"' in makefile and "2.0.6".startswith("2.0.")


@pytest.mark.parametrize("stage", ["coordinator", "node"])
def test_the_build_context_holds_what_the_dockerfile_copies(stage: str) -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    for op, rest in _chain(stage):
        if op == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert source in allowed, f"COPY {source} is excluded by .dockerignore"
                assert (ROOT / source).exists()
