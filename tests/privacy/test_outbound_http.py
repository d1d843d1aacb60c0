"""Outbound inspection of HTTP: what a node service sends the coordinator carries no record
value and no pseudonym (and a leaky body is caught)."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app
from coordinator.client import CoordinatorClient
from coordinator.runner import RoundProgress, RunResult
from coordinator.settings import load_settings
from federation.spec import JobSpec
from hamanasu.demo import EXAMPLES, MATERNITY
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbound_harness import NodeSecrets, OutboundItem, body_items, inspect_outbound  # noqa: E402

#: Kinds of finding that mean data left the node (HTTP bodies are not Flower records, so
#: the Flower allow-list of clear keys does not apply to them).
DATA_LEAKS = {"pseudonym", "record_values", "clear_update"}


class _InstantRunner:
    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress,
        cancelled: threading.Event,
    ) -> RunResult:
        on_progress(RoundProgress(round=1, rounds_total=1, metrics={}))
        return RunResult("succeeded", "done", report={}, epsilon_by_node={})


def _secrets(data: Path, name: str) -> NodeSecrets:
    births = pd.read_csv(data / name / "births.csv")
    consents = pd.read_csv(data / name / "consents.csv")
    numeric = births.select_dtypes("number")
    return NodeSecrets(
        name=name,
        columns={c: numeric[c].to_numpy(dtype=float) for c in numeric.columns},
        pseudonyms=frozenset(births["subject"])
        | frozenset(births["infant"])
        | frozenset(consents["subject"]),
    )


def _recording(client: TestClient, name: str, sink: list[OutboundItem]) -> TestClient:
    def record(request):  # httpx request hook: the body exactly as it leaves
        sink.extend(
            body_items(request.read(), "http", name, f"{request.method} {request.url.path}")
        )

    client.event_hooks = {"request": [record], "response": []}
    return client


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from nodes.scenario import generate

    out = tmp_path_factory.mktemp("scenario")
    generate("iwamizawa", out, years=[2019])
    return out


def test_node_service_http_bodies_carry_no_data(tmp_path, data):
    app = create_app(load_settings(data_dir=tmp_path / "coord"), _InstantRunner())
    op = bootstrap_operator(app.state.store).token
    sent: list[OutboundItem] = []
    with TestClient(app) as http:
        oper = CoordinatorClient("", op, client=http)
        services = {}
        for name in MATERNITY:
            oper.register_node(name)
            token = oper.issue_service_token(name).token  # the node service's own token
            state = tmp_path / "nodes" / name
            shutil.rmtree(state, ignore_errors=True)
            init_node(state, name, EXAMPLES / "policies" / f"{name}.toml")
            import_consents(EnforcementPoint(name, state), data / name / "consents.csv")
            client = _recording(
                TestClient(app, headers={"Authorization": f"Bearer {token}"}), name, sent
            )
            cfg = NodeServiceConfig(
                name=name,
                coordinator_url="http://testserver",
                state_dir=state,
                data_dir=data / name,
            )
            services[name] = NodeService(cfg, CoordinatorLink(client, name))
            services[name].poll_once()
        oper.register_organisation("hokkaido-university", "academic", {"iwamizawa-mch-2017": False})
        researcher = oper.create_principal("aki", "researcher", None, "hokkaido-university")
        researcher = researcher.token.token
        res = CoordinatorClient("", researcher, client=TestClient(app))
        job = res.submit(
            {
                "kind": "train",
                "features": ["maternal_age", "bmi_pre"],
                "label": "lbw",
                "rounds": 1,
                "nodes": list(MATERNITY),
                "purpose": {"requester": "hokkaido-university"},
                "privacy": {"epsilon": 1.0, "delta": 1e-5},
            }
        )
        decided = {name: s.poll_once() for name, s in services.items()}
        assert all(job.id in d for d in decided.values())
    posted = {(i.sender, i.message_type.split()[0]) for i in sent if i.path == "body" and i.value}
    # Both nodes published their caps (PUT) and posted their decisions (POST).
    assert posted >= {(n, m) for n in MATERNITY for m in ("PUT", "POST")}
    secrets = [_secrets(data, name) for name in MATERNITY]
    findings = [
        f
        for f in inspect_outbound(sent, secrets, expect_secure_aggregation=False)
        if f.kind in DATA_LEAKS
    ]
    assert findings == []

    # The same inspection catches a leaky body: a pseudonym and a run of birth weights.
    births = pd.read_csv(data / MATERNITY[0] / "births.csv")
    leaky = {
        "note": str(births["subject"].iloc[0]),
        "values": births["birth_weight_g"].to_numpy(dtype=float)[:40].tolist(),
    }
    import json

    leaked = body_items(json.dumps(leaky).encode(), "http", MATERNITY[0], "POST /x")
    kinds = {f.kind for f in inspect_outbound(leaked, secrets, expect_secure_aggregation=False)}
    assert {"pseudonym", "record_values"} <= kinds
    assert np.isfinite(births["birth_weight_g"]).all()
