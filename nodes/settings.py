"""The node service's settings: environment (``HAMANASU_NODE_*``), ``node.toml``, defaults.

Precedence, highest first: values passed in code, environment variables
(``HAMANASU_NODE_NAME``, ``HAMANASU_NODE_TOKEN_FILE``, nested tables with ``__``:
``HAMANASU_NODE_SUPERNODE__SUPERLINK``), the ``[node]`` table of ``node.toml`` (or its keys
at top level; relative paths are taken from the file's folder), then the defaults. A node
can thus run from a file, from the environment alone (a container), or from both.

Secrets are files: the node service's token (``token_file``), its human admin's token
(``admin_token_file``), the SuperNode's private key (under ``supernode.pki_dir``) and the
consortium's pseudonymisation key (in the state folder) are read from files only their
owner can read. A token given as a value (``token = ...`` in the file,
``HAMANASU_NODE_TOKEN`` in the environment) is refused with one line naming the setting.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from federation.secret_files import SecretFileError, refuse_secret_values
from nodes.supernode import SupernodeConfig

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SECRET_SETTINGS",
    "AdminListen",
    "NodeServiceConfig",
    "NodeServiceError",
    "load_node_config",
]

#: Prefix of the node service's environment variables.
ENV_PREFIX = "HAMANASU_NODE_"
#: The variable naming ``node.toml`` when ``--config`` is not given.
CONFIG_ENV = "HAMANASU_NODE_CONFIG"
#: Secrets the node service takes only from a file (``<name>_file``), never as a value.
SECRET_SETTINGS = ("token", "admin_token")

_FILE_TABLE: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_TABLE", default=None)


class NodeServiceError(ValueError):
    """The node service cannot do what was asked; the message names the field or job."""


class AdminListen(BaseModel):
    """The ``[node.admin]`` table: where the node's own admin API and console listen.

    Attributes:
        host: a loopback address (the admin API is for the node's own staff).
        port: the TCP port.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", pattern=r"^(127\.[0-9.]+|::1|localhost)$")
    port: int = Field(default=8760, ge=1, le=65535)


class _FileTable(PydanticBaseSettingsSource):
    """The ``[node]`` table of the file being loaded (paths already resolved)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        table = _FILE_TABLE.get() or {}
        return table.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_TABLE.get() or {})


class NodeServiceConfig(BaseSettings):
    """The node service's settings (``[node]`` of ``node.toml``, or ``HAMANASU_NODE_*``).

    Attributes:
        name: the node's name as registered at the coordinator.
        coordinator_url: the coordinator's base URL (https://, or http:// on loopback).
        state_dir: the node's state folder (key, policy, ledger, budget).
        data_dir: the node's data folder (to count consenting subjects; optional).
        token_file: a 0600 file holding the node service's own token, the node_service
            token the operator issues for this node (``hamanasu node serve`` needs it and
            stops at start, saying so, on a person's token; the admin commands fall back
            to ``HAMANASU_TOKEN``).
        admin_token_file: a 0600 file holding the node's human admin token, for the admin's
            actions (approve, reject, release, withhold) through ``hamanasu node approvals``
            and the node's admin API; without it those go with ``token_file``'s token.
        ca_file: a CA bundle to verify the coordinator's certificate.
        poll_interval: seconds between polls.
        domains: the data-model domains this node holds (each must be a domain of the
            schema file in force); the node publishes only these and refuses a job on any
            other. ``None``: whatever its policy lists.
        supernode: the Flower SuperNode to run beside the service (``[node.supernode]``).
        admin: where the node's admin API and console listen (``[node.admin]``).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    coordinator_url: str = Field(pattern=r"^https?://")
    state_dir: Path
    data_dir: Path | None = None
    token_file: Path | None = None
    admin_token_file: Path | None = None
    ca_file: Path | None = None
    poll_interval: float = Field(default=5.0, gt=0, le=3600)
    domains: list[str] | None = None
    supernode: SupernodeConfig | None = None
    admin: AdminListen | None = None

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, value: list[str] | None) -> list[str] | None:
        from federation.cdm import DOMAINS

        unknown = [d for d in value or [] if d not in DOMAINS]
        if unknown:
            raise ValueError(f"{unknown} not in the data model (known: {', '.join(DOMAINS)})")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: code, environment, ``node.toml``, defaults."""
        return (init_settings, env_settings, _FileTable(settings_cls))

    @property
    def status_file(self) -> Path:
        """The file the running service writes its heartbeat to (``hamanasu node health``)."""
        return self.state_dir / "service-status.json"


def _read_table(path: Path) -> dict[str, Any]:
    """Return the ``[node]`` table of ``path`` with its relative paths made absolute.

    Raises:
        NodeServiceError: the file cannot be read or is not TOML.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NodeServiceError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise NodeServiceError(f"--config: {path.name} is not valid TOML: {exc}") from None
    table = data.get("node", data)
    folder = path.parent.resolve()
    for key in ("state_dir", "data_dir", "token_file", "admin_token_file", "ca_file"):
        if isinstance(table.get(key), str) and not Path(table[key]).is_absolute():
            table[key] = str(folder / table[key])
    supernode = table.get("supernode")
    pki_dir = supernode.get("pki_dir") if isinstance(supernode, dict) else None
    if isinstance(pki_dir, str) and not Path(pki_dir).is_absolute():
        supernode["pki_dir"] = str(folder / pki_dir)
    return dict(table)


def load_node_config(path: Path | None = None) -> NodeServiceConfig:
    """Read the node service's settings from ``path`` (``node.toml``) and the environment.

    Without ``path``, the file named by ``HAMANASU_NODE_CONFIG`` is read, if set; without
    either, the settings come from the environment alone.

    Returns:
        The validated settings.

    Raises:
        NodeServiceError: the file is missing or invalid, a setting is invalid or missing
            (naming it), or a secret is given as a value.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    table = _read_table(path) if path is not None else {}
    try:
        refuse_secret_values(SECRET_SETTINGS, table=table, env_prefix=ENV_PREFIX)
    except SecretFileError as exc:
        raise NodeServiceError(str(exc)) from None
    token = _FILE_TABLE.set(table)
    try:
        return NodeServiceConfig()  # type: ignore[call-arg]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(map(str, err["loc"])) or "node"
        where = f"{path.name} or " if path is not None else ""
        missing = err["type"] == "missing"
        hint = f" (set it in {where}{ENV_PREFIX}{field.upper()})" if missing else ""
        raise NodeServiceError(f"{field}: {err['msg']}{hint}") from None
    finally:
        _FILE_TABLE.reset(token)
