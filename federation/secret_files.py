"""Secrets are read from files readable by their owner only, never taken as values.

Every service setting that holds a secret (an API token, a database password, a TLS or
signing key) names a file (``*_file``); :func:`read_secret_file` reads it after
:func:`check_private_file` has made sure no group or other user can read it, and
:func:`refuse_secret_values` turns a secret handed over as a value (a command-line
argument, an environment variable, a config-file value) into a one-line refusal naming the
setting to use instead. Messages name the setting and the file, never the content.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from federation.errors import FederationError

__all__ = [
    "SecretFileError",
    "check_private_file",
    "read_secret_file",
    "refuse_secret_values",
]


class SecretFileError(FederationError, ValueError):
    """A secret file is missing, unreadable or readable by others, or a secret came as a value.

    Attributes:
        field: the setting concerned (``token_file``, ``database_password``, ...).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def check_private_file(path: Path, field: str) -> Path:
    """Check that ``path`` is a file that only its owner may read or write (0600 or 0400).

    Returns:
        ``path``.

    Raises:
        SecretFileError: it does not exist, is not a regular file, or its mode gives group or
            others any access (the message says ``chmod 600``).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretFileError(field, f"{path} does not exist") from None
    except OSError as exc:
        raise SecretFileError(field, f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretFileError(field, f"{path} is not a regular file")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SecretFileError(
            field,
            f"{path} is readable by others; chmod 600 it (mode {stat.S_IMODE(st.st_mode):04o})",
        )
    return path


def read_secret_file(path: Path, field: str) -> str:
    """Return the stripped text of the secret file ``path`` after :func:`check_private_file`.

    Raises:
        SecretFileError: see :func:`check_private_file`; also an empty or unreadable file.
    """
    check_private_file(path, field)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(field, f"cannot read {path}: {type(exc).__name__}") from None
    if not text:
        raise SecretFileError(field, f"{path} is empty")
    return text


def refuse_secret_values(
    secrets: Iterable[str],
    *,
    table: Mapping[str, Any] | None = None,
    env_prefix: str = "",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse any of ``secrets`` given as a value in a config ``table`` or the environment.

    Args:
        secrets: setting names of secrets (``token``, ``database_password``); each has a
            ``<name>_file`` setting that names the file instead.
        table: the settings read from a config file, if any.
        env_prefix: the environment prefix of the settings (``HAMANASU_NODE_``).
        environ: the environment (default ``os.environ``).

    Raises:
        SecretFileError: the first secret found as a value, naming the ``_file`` setting.
    """
    env = os.environ if environ is None else environ
    for name in secrets:
        var = f"{env_prefix}{name}".upper()
        where = None
        if table is not None and name in table:
            where = f"a config value ({name} = ...)"
        elif env_prefix and env.get(var):
            where = f"an environment variable ({var})"
        if where is not None:
            raise SecretFileError(
                name,
                f"a secret is never taken as {where}; write it to a file only its owner can "
                f"read (chmod 600) and set {name}_file",
            )
