"""Test and bench helpers: small Iwamizawa nodes (data, policy, consents) and a tiny DP job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from federation.spec import JobSpec, parse_job_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "iwamizawa"
SOURCES = ("city-hospital", "women-clinic")
#: SuperNodes' heartbeat interval in tests that kill or cut off a node: Flower's shortest
#: (10 s; its default 30 s keeps a dead node "online", and waited for, for a minute).
HEARTBEAT_S = 10.0


def scenario(folder: Path) -> Path:
    """Generate the Iwamizawa scenario for 2019 once under ``folder``; return its data dir."""
    from nodes.scenario import generate

    data = folder / "scenario"
    if not (data / "city-hospital").exists():
        generate("iwamizawa", data, years=[2019])
    return data


def make_nodes(folder: Path, names: list[str]) -> dict[str, tuple[Path, Path]]:
    """Create nodes ``names`` (data + initialised state with policy and consents).

    Node ``i`` gets a copy of a maternity facility's data (alternating), so any number of
    nodes can be made from the two generated facilities.

    Returns:
        name -> (data dir, state dir).
    """
    from nodes.cli import import_consents, init_node
    from nodes.enforcement import EnforcementPoint

    data_root = scenario(folder)
    out = {}
    for i, name in enumerate(names):
        source = SOURCES[i % 2]
        data = folder / "data" / name
        if not data.exists():
            shutil.copytree(data_root / source, data)
        state = folder / "state" / name
        if not state.exists():
            init_node(state, name, EXAMPLES / "policies" / f"{source}.toml")
            import_consents(EnforcementPoint(name, state), data / "consents.csv")
        out[name] = (data, state)
    return out


def tiny_job(
    nodes: list[str], *, rounds: int = 1, min_nodes: int = 2, timeout: float = 20.0
) -> JobSpec:
    """A small DP + SecAgg+ logistic regression over the births table."""
    import tomllib

    data: dict[str, Any] = tomllib.loads((EXAMPLES / "lbw_model.toml").read_text())
    data.update(rounds=rounds, min_nodes=min_nodes, nodes=nodes)
    data["secure_aggregation"] = {"enabled": True, "timeout": timeout, "max_retries": 2}
    data["training"]["local_epochs"] = 1
    return parse_job_spec(data)


def accept(nodes: dict[str, tuple[Path, Path]], job: JobSpec, job_id: str) -> None:
    """Each node accepts the job (reserves its budget), as its node service would on approval."""
    from nodes.enforcement import EnforcementPoint

    for name, (_, state) in nodes.items():
        EnforcementPoint(name, state).accept(job, job_id)


def max_records(nodes: dict[str, tuple[Path, Path]], job: JobSpec) -> int:
    """Return the largest node's row count for the job's table."""
    from nodes.sources import read_columns

    return max(len(read_columns(data, job.domain, job.columns())) for data, _ in nodes.values())


def job_json(job: JobSpec) -> str:
    """Return the spec as JSON (what the run config carries)."""
    return json.dumps(job.model_dump(mode="json"))
