"""Bad input against a real coordinator (``hamanasu coordinator serve``, uvicorn on loopback):
every refusal is a 4xx with a JSON body naming the field, and no job is stored."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from coordinator.client import CoordinatorClient

PROJECT = "iwamizawa-mch-2017"
GOOD = {
    "kind": "train",
    "name": "lbw",
    "features": ["maternal_age", "bmi_pre"],
    "label": "lbw",
    "rounds": 2,
    "purpose": {"project": PROJECT},
    "privacy": {"epsilon": 3.0},
}
STATS = {"kind": "stats", "name": "s", "stats": {"variables": ["maternal_age"]}}


@dataclass
class Live:
    url: str
    researcher: str
    operator: str
    proc: subprocess.Popen[bytes]

    def h(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.researcher}"}

    def job_count(self) -> int:
        r = httpx.get(f"{self.url}/jobs", params={"limit": 500}, headers=self.h(self.operator))
        assert r.status_code == 200, r.text
        return len(r.json())

    def submit(self, spec: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/jobs", json={"spec": spec}, headers=self.h(), timeout=60)

    def post_raw(self, body: bytes, path: str = "/jobs") -> httpx.Response:
        headers = {**self.h(), "Content-Type": "application/json"}
        return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=60)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("coord")
    env = {**os.environ, "HAMANASU_ARGON2_TIME_COST": "1"}
    hamanasu = [sys.executable, "-m", "hamanasu", "coordinator"]
    data, op_file = root / "data", root / "op"
    init = [*hamanasu, "init", "--data-dir", str(data), "--token-out", str(op_file)]
    subprocess.run(init, env=env, check=True, capture_output=True, timeout=120)
    port = _port()
    proc = subprocess.Popen(
        [*hamanasu, "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("the coordinator did not start")
            time.sleep(0.1)
        op = CoordinatorClient(url, op_file.read_text().strip())
        for node in ("n1", "n2"):
            op.register_node(node)
        op.register_organisation("hokkaido-university", "academic", {PROJECT: False})
        aki = op.create_principal("aki", "researcher", None, "hokkaido-university")
        researcher = aki.token.token
        yield Live(url, researcher, op_file.read_text().strip(), proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _refused(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["field"] == field, body
    return body


def test_submit_job_good_spec_is_stored(live: Live) -> None:
    before = live.job_count()
    r = live.submit(GOOD)
    assert r.status_code == 201, r.text
    assert live.job_count() == before + 1


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**STATS, "stats": {"variables": [f"v{i}" for i in range(40_000)]}}, "stats.variables"),
        ({**STATS, "stats": {"variables": ["a"], "bins": list(range(20_000))}}, "stats.bins"),
        (
            {**STATS, "stats": {"variables": ["a"], "levels": {"parity": list(range(50_000))}}},
            "stats.levels.parity",
        ),
        (
            {
                **STATS,
                "stats": {
                    "variables": ["a", "b"],
                    "group_by": ["g", "h"],
                    "levels": {"g": list(range(1000)), "h": list(range(1000))},
                },
            },
            "stats",
        ),
        ({**GOOD, "nodes": [f"n{i}" for i in range(5000)]}, "nodes"),
        ({**GOOD, "purpose": {"duo": ["HMB"] * 100}}, "purpose.duo"),
        ({**GOOD, "privacy": {"epsilon": "3"}}, "privacy.epsilon"),
        ({**GOOD, "privacy": {"epsilon": True}}, "privacy.epsilon"),
        ({**GOOD, "rounds": "2"}, "rounds"),
        (
            {**GOOD, "privacy": {"epsilon": 3.0, "max_rows_per_subject": 2.0}},
            "privacy.max_rows_per_subject",
        ),
        ({**GOOD, "purpose": {"commercial": "no"}}, "purpose.commercial"),
        ({**GOOD, "model": "resnet152"}, "model"),
        ({**GOOD, "name": "lbw\n2026-12-03 07:00:00 INFO job approved"}, "name"),
        ({**GOOD, "name": "lbw\u202egnp.exe"}, "name"),
        (
            {**GOOD, "training": {"scaling": {"x": [[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]}}},
            "training.scaling.x",
        ),
    ],
)
def test_submit_job_bad_spec_422_names_the_field_and_stores_nothing(
    live: Live, spec: dict[str, Any], field: str
) -> None:
    before = live.job_count()
    body = _refused(live.submit(spec), 422, field)
    assert body["code"] == "invalid_spec"
    assert body["detail"][0]["msg"].startswith(f"{field}: ")
    assert live.job_count() == before


def test_submit_job_huge_body_413_stores_nothing(live: Live) -> None:
    before = live.job_count()
    levels = {"parity": list(range(1_000_000))}  # about 7 MB of JSON
    spec = {**STATS, "stats": {"variables": ["a"], "levels": levels, "bins": list(range(10))}}
    body = _refused(live.submit(spec), 413, "body")
    assert body["code"] == "too_large"

    # without a Content-Length (chunked), the bytes are counted as they arrive
    def chunks() -> Iterator[bytes]:
        yield b'{"spec": {"kind": "stats", "name": "'
        for _ in range(2048):
            yield b"x" * 1024
        yield b'"}}'

    r = httpx.post(
        f"{live.url}/jobs",
        content=chunks(),
        headers={**live.h(), "Content-Type": "application/json"},
        timeout=60,
    )
    _refused(r, 413, "body")
    assert live.job_count() == before
    assert live.proc.poll() is None


@pytest.mark.parametrize("depth", [100, 100_000])
def test_submit_job_deeply_nested_json_422_stores_nothing(live: Live, depth: int) -> None:
    before = live.job_count()
    nested = "[" * depth + "]" * depth
    raw = f'{{"spec": {{"kind": "stats", "stats": {nested}}}}}'.encode()
    body = _refused(live.post_raw(raw), 422, "body")
    assert "deeper than 64 levels" in body["detail"]
    # FastAPI parses a body that names no content type as JSON too
    r = httpx.post(f"{live.url}/jobs", content=raw, headers=live.h(), timeout=60)
    _refused(r, 422, "body")
    assert live.job_count() == before


def test_console_submit_deep_toml_422_stores_nothing(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=60) as browser:
        page = browser.get("/console/login")
        nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
        r = browser.post("/console/login", data={"nonce": nonce, "token": live.researcher})
        assert r.status_code == 303, r.text[:300]
        form = browser.get("/console/jobs").text
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        before = live.job_count()
        deep = "x = " + "[" * 5000 + "]" * 5000 + "\n"
        r = browser.post("/console/jobs", data={"csrf": csrf, "spec": 'kind = "stats"\n' + deep})
        assert r.status_code == 422, r.text[:300]
        assert "nests tables or arrays deeper than" in r.text
        assert live.job_count() == before


def test_console_login_non_ascii_nonce_is_refused_not_500(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as browser:
        assert browser.get("/console/login").status_code == 200  # sets the nonce cookie
        r = browser.post("/console/login", data={"nonce": "ノンス", "token": live.researcher})
        assert r.status_code == 403, r.text[:300]
        assert "hmn_session" not in r.cookies


def test_unparsable_or_huge_ledger_upload_is_refused(live: Live) -> None:
    # the ledger upload route takes larger bodies, but not unbounded ones
    big = json.dumps({"entries": ["x" * (12 * 1024 * 1024)]}).encode()
    r = live.post_raw(big, "/nodes/n1/audit/entries")
    _refused(r, 413, "body")
    assert live.proc.poll() is None
