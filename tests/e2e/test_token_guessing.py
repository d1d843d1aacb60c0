"""Guessing API tokens against a real coordinator process on loopback.

Tokens carry 256 random bits and are stored as keyed BLAKE2b digests, so a bad guess costs
the server a look-up and a hash, not an argon2 computation; a client that keeps sending bad
tokens is told to wait (429 with ``Retry-After``) while other clients, and the guessing
client's own already-verified token, keep working.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from coordinator.auth import TOKEN_KEY_FILE

pytestmark = pytest.mark.slow

LIMIT = 10  # coordinator.auth.BadTokenThrottle's default


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory):
    from hamanasu.cli import _mount, app

    _mount()
    tmp = tmp_path_factory.mktemp("guess")
    data = tmp / "coord"
    r = CliRunner().invoke(
        app, ["coordinator", "init", "--data-dir", str(data), "--token-out", str(tmp / "op")]
    )
    assert r.exit_code == 0, r.output
    port = _port()
    proc = subprocess.Popen(  # noqa: S603 - our own command
        [
            sys.executable,
            "-m",
            "hamanasu",
            "coordinator",
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(port),
        ],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url, (tmp / "op").read_text().strip(), data
    proc.terminate()
    proc.wait(timeout=10)


def _client(url: str, source: str) -> httpx.Client:
    """An HTTP client whose connections come from ``source`` (any 127.x is loopback)."""
    return httpx.Client(
        base_url=url, timeout=10, transport=httpx.HTTPTransport(local_address=source)
    )


def _guess(n: int) -> str:
    return f"hmn_{n:012x}_{'A' * 43}"


def test_token_hashes_are_keyed_with_a_private_key(coordinator) -> None:
    _, _, data = coordinator
    key = data / TOKEN_KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32


def test_guessing_client_waits_others_and_its_verified_token_do_not(coordinator) -> None:
    url, operator, _ = coordinator
    good = {"Authorization": f"Bearer {operator}"}
    with _client(url, "127.0.0.1") as guesser, _client(url, "127.0.0.2") as bystander:
        assert guesser.get("/me", headers=good).status_code == 200  # verified, then cached
        statuses = [
            guesser.get("/me", headers={"Authorization": f"Bearer {_guess(i)}"})
            for i in range(LIMIT + 5)
        ]
        assert [r.status_code for r in statuses[:LIMIT]] == [401] * LIMIT
        refused = statuses[LIMIT:]
        assert all(r.status_code == 429 for r in refused), [r.status_code for r in refused]
        assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in refused)
        assert refused[0].json()["code"] == "too_many_requests"
        # the guesser's own verified token still works; another client is not throttled
        assert guesser.get("/me", headers=good).status_code == 200
        other = bystander.get("/me", headers={"Authorization": f"Bearer {_guess(99)}"})
        assert other.status_code == 401
        # a valid token never verified before, from the guesser's own address, still works:
        # the throttle answers bad tokens only (a NAT or one host's node services share it)
        made = bystander.post(
            "/principals", json={"name": "late-auditor", "role": "auditor"}, headers=good
        )
        assert made.status_code == 201, made.text
        fresh = {"Authorization": f"Bearer {made.json()['token']['token']}"}
        assert guesser.get("/me", headers=fresh).status_code == 200
        again = guesser.get("/me", headers={"Authorization": f"Bearer {_guess(100)}"})
        assert again.status_code == 429
