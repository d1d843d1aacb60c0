"""Console test fixtures: a coordinator with a scripted runner, two nodes, a principal per role."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from coordinator.api import bootstrap_operator, create_app
from coordinator.runner import RoundProgress, RunResult
from coordinator.schemas import NodeCreate, PrincipalCreate
from coordinator.settings import load_settings
from federation.api_models import NodeRegistration
from federation.spec import JobSpec

COLUMNS = ["maternal_age", "parity", "bmi_pre", "smoking", "lbw"]

SPEC_TOML = """\
kind = "train"
name = "lbw-console"
domain = "births"
features = ["maternal_age", "parity", "bmi_pre", "smoking"]
label = "lbw"
rounds = 3
min_nodes = 1
nodes = ["city-hospital"]

[purpose]
duo = ["HMB"]
project = "console-test"
requester = "hokkaido-university"
requester_type = "academic"

[privacy]
epsilon = 2.0
delta = 1e-5
"""


class ScriptedRunner:
    """Reports ``rounds`` rounds with made-up metrics, ``delay`` seconds apart, then succeeds."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        rounds = []
        for k in range(1, job.rounds + 1):
            time.sleep(self.delay)
            metrics = {"auc": 0.6 + 0.05 * k, "log_loss": 0.7 - 0.05 * k}
            rounds.append({"round": k, "metrics": metrics})
            on_progress(RoundProgress(k, job.rounds, metrics))
        return RunResult(
            "succeeded",
            f"{job.rounds} round(s) done",
            report={"rounds": rounds},
            model={"parameters": [[0.1, 0.2]]},
            epsilon_by_node={n: 1.5 for n in nodes},
            plot_png=b"\x89PNG\r\n\x1a\n",
        )


def build_world(data_dir: Path, delay: float = 0.3) -> tuple[FastAPI, dict[str, str]]:
    """The app and a token per role: researcher, other researcher, node admin, auditor, operator."""
    app = create_app(load_settings(data_dir=data_dir, argon2_time_cost=1), ScriptedRunner(delay))
    store = app.state.store
    tokens: dict[str, Any] = {"operator": bootstrap_operator(store).token}
    for name in ("city-hospital", "women-clinic"):
        store.register_node(NodeCreate(name=name))
        store.publish_node(
            name, NodeRegistration(max_epsilon_per_job=3.0, domains={"births": COLUMNS})
        )
    tokens["node_admin"] = store.create_principal(
        PrincipalCreate(name="hospital-admin", role="node_admin", node="city-hospital")
    )[1].token
    tokens["researcher"] = store.create_principal(PrincipalCreate(name="aki", role="researcher"))[
        1
    ].token
    tokens["other"] = store.create_principal(PrincipalCreate(name="ren", role="researcher"))[
        1
    ].token
    tokens["auditor"] = store.create_principal(PrincipalCreate(name="audit", role="auditor"))[
        1
    ].token
    return app, tokens


@pytest.fixture(scope="session")
def spec_toml() -> str:
    """A valid job spec (TOML) the console tests submit."""
    return SPEC_TOML


@pytest.fixture(scope="session")
def world_factory() -> Callable[..., tuple[FastAPI, dict[str, str]]]:
    """``build_world(data_dir, delay)``: the app and a token per role."""
    return build_world
