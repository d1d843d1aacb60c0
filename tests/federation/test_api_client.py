"""Reading the coordinator's token and its error answers, once for every client."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from federation.api_client import TokenError, read_refusal, read_token, write_token


def test_read_token_from_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("hmn_abc.def\n", encoding="utf-8")
    os.chmod(path, 0o600)
    assert read_token(path, "--token-file") == "hmn_abc.def"


def test_read_token_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("hmn_abc.def", encoding="utf-8")
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match=r"^token_file: .* is readable by others; chmod 600 it"):
        read_token(path, "token_file")


def test_read_token_names_the_missing_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TokenError, match=r"^--token-file: .*nope does not exist$"):
        read_token(tmp_path / "nope", "--token-file")
    monkeypatch.delenv("HAMANASU_TOKEN", raising=False)
    with pytest.raises(TokenError, match="set HAMANASU_TOKEN or --token-file"):
        read_token(None, "--token-file")
    monkeypatch.setenv("HAMANASU_TOKEN", " hmn_env.tok ")
    assert read_token(None, "--token-file") == "hmn_env.tok"


def test_read_refusal_of_a_coordinator_error() -> None:
    resp = httpx.Response(
        409, json={"detail": "name: node 'a' is registered", "code": "conflict", "field": "name"}
    )
    refusal = read_refusal(resp)
    assert (refusal.status, refusal.code, refusal.field) == (409, "conflict", "name")
    assert refusal.message == "name: node 'a' is registered"


def test_read_refusal_of_a_validation_error_names_the_field() -> None:
    resp = httpx.Response(
        422,
        json={"detail": [{"loc": ["body", "privacy", "epsilon"], "msg": "must be > 0"}]},
    )
    refusal = read_refusal(resp)
    assert refusal.field == "privacy.epsilon"
    assert refusal.message == "privacy.epsilon: must be > 0"


def test_read_refusal_of_a_body_that_is_not_json() -> None:
    refusal = read_refusal(httpx.Response(502, text="<html>bad gateway</html>"))
    assert refusal.message == "HTTP 502: <html>bad gateway</html>"
    assert refusal.code is None and refusal.field is None


def test_write_token_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "tokens" / "operator"
    path.parent.mkdir()
    path.write_text("old", encoding="utf-8")
    os.chmod(path, 0o644)  # an existing file others could read is made private
    write_token(path, "hmn_new.tok")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_token(path, "--token-file") == "hmn_new.tok"
