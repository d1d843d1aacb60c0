"""What every client of the coordinator's API shares: its bearer token and its error answers.

The researchers' client and CLI (``coordinator``) and the node service (``nodes``) both call
the coordinator with a bearer token read the same way, and read its refusals the same way:
the coordinator answers ``{"detail", "code", "field"}``, or FastAPI's list of validation
errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from federation.errors import FederationError
from federation.secret_files import SecretFileError, read_secret_file

__all__ = ["ApiRefusal", "TokenError", "read_refusal", "read_token", "write_token"]

#: The environment variable holding a token when no token file is given.
TOKEN_ENV = "HAMANASU_TOKEN"


class TokenError(FederationError, ValueError):
    """No usable API token: a missing or world-readable token file, or none at all."""


def read_token(token_file: Path | None, option: str) -> str:
    """Return the API token from ``token_file`` (which must be 0600) or ``HAMANASU_TOKEN``.

    Args:
        token_file: the file holding the token, or None to read the environment.
        option: how the caller names the token file (``--token-file``, ``token_file``),
            used in the messages.

    Returns:
        The token, stripped.

    Raises:
        TokenError: the file is missing or readable by others, or no token is set.
    """
    if token_file is not None:
        try:
            return read_secret_file(token_file, option)
        except SecretFileError as exc:
            raise TokenError(str(exc)) from None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise TokenError(f"token: set {TOKEN_ENV} or {option}")
    return token


def write_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` as :func:`read_token` wants it: readable by its owner only.

    A folder it creates is 0700; an existing file is truncated and made 0600 first.

    Raises:
        OSError: the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")


@dataclass(frozen=True)
class ApiRefusal:
    """The coordinator's refusal of a call, as one line for people.

    Attributes:
        status: the HTTP status.
        message: what was wrong, prefixed with the field when the coordinator named one.
        code: the coordinator's error code (``forbidden``, ``invalid_spec``, ...), if any.
        field: the field concerned, if any.
    """

    status: int
    message: str
    code: str | None = None
    field: str | None = None


def read_refusal(resp: httpx.Response) -> ApiRefusal:
    """Return what the coordinator's error answer ``resp`` says.

    Returns:
        The refusal; a body that is not JSON is quoted (its first 200 characters).
    """
    try:
        body = resp.json()
    except ValueError:
        return ApiRefusal(resp.status_code, f"HTTP {resp.status_code}: {resp.text[:200]}")
    detail = body.get("detail") if isinstance(body, dict) else body
    field = body.get("field") if isinstance(body, dict) else None
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = [str(p) for p in first.get("loc", []) if p not in ("body", "spec", "query", "path")]
        field = field or ".".join(loc) or None
        msg = str(first.get("msg", ""))
        message = msg if field is None or msg.startswith(field) else f"{field}: {msg}"
    else:
        message = str(detail)
    return ApiRefusal(resp.status_code, message, code, field)
