"""The SuperLink keeps its state in memory; the coordinator keeps the SuperNode keys the
operator registered and registers them again when it starts a SuperLink."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app, open_store
from coordinator.flower_control import FlowerApp, FlowerControl
from coordinator.flower_engine import FlowerEngine
from coordinator.schemas import NodeCreate
from federation.pki import create_node_key, init_pki
from federation.processes import free_port
from hamanasu import FLOWER_APP_DIR

from .conftest import fast_settings


def _registered(engine: FlowerEngine) -> dict[str, str]:
    with FlowerControl(engine.control_address, engine.pki.ca_cert) as ctl:
        return {n.name: n.status for n in ctl.nodes() if n.status != "unregistered"}


@pytest.mark.slow
def test_registered_keys_are_registered_again_after_a_superlink_restart(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "pki")
    keys = {name: create_node_key(pki, name).public_key.read_text() for name in ("n1", "n2")}
    settings = fast_settings(
        tmp_path / "coord",
        engine="deployment",
        pki_dir=pki.root,
        superlink_port=free_port(),
    )
    store = open_store(settings)
    token = bootstrap_operator(store).token
    for name in ("n1", "n2", "n3"):
        store.register_node(NodeCreate(name=name))
    auth = {"Authorization": f"Bearer {token}"}

    engine = FlowerEngine(settings, FlowerApp.load(FLOWER_APP_DIR)).start()
    try:
        with TestClient(create_app(settings, store=store, engine=engine)) as http:
            for name, key in keys.items():
                r = http.post(
                    f"/nodes/{name}/supernode-key", json={"public_key": key}, headers=auth
                )
                assert r.status_code == 201, r.text
            # refused by the SuperLink: nothing is recorded for n3
            r = http.post("/nodes/n3/supernode-key", json={"public_key": keys["n1"]}, headers=auth)
            assert r.status_code == 409 and r.json()["field"] == "public_key"
        assert set(_registered(engine)) == {"n1", "n2"}
    finally:
        engine.stop()
    assert set(store.supernode_keys()) == {"n1", "n2"}

    restarted = FlowerEngine(settings, FlowerApp.load(FLOWER_APP_DIR)).start()
    try:
        assert _registered(restarted) == {}  # a fresh SuperLink knows no node
        create_app(settings, store=store, engine=restarted)
        assert set(_registered(restarted)) == {"n1", "n2"}
    finally:
        restarted.stop()
