"""The coordinator's settings: environment (``HAMANASU_*``), an optional TOML file, defaults.

Precedence, highest first: values passed in code (CLI options), environment variables,
the ``[coordinator]`` table of the TOML file named by ``config_file`` (or the
``HAMANASU_CONFIG`` variable), then the defaults. Insecure combinations are refused at
load time (:meth:`CoordinatorSettings.check_secure`), loudly, with the setting named.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from coordinator.errors import SettingsError
from federation.secret_files import (
    SecretFileError,
    check_private_file,
    read_secret_file,
    refuse_secret_values,
)


def _has_psycopg() -> bool:
    """Return whether the PostgreSQL driver (the ``postgres`` extra) is installed."""
    return importlib.util.find_spec("psycopg") is not None


__all__ = ["SECRET_SETTINGS", "CoordinatorSettings", "load_settings"]

#: Secrets the coordinator takes only from a file (``<name>_file``), never as a value.
SECRET_SETTINGS = ("database_password",)

log = logging.getLogger("hamanasu.coordinator")

_TOML: ContextVar[Path | None] = ContextVar("_TOML", default=None)


class CoordinatorSettings(BaseSettings):
    """Settings of one coordinator service.

    Attributes:
        data_dir: the service's folder (SQLite database, result files); created 0700.
        database_url: SQLAlchemy URL; default ``sqlite:///<data_dir>/coordinator.sqlite``.
            PostgreSQL: ``postgresql+psycopg://user@host/db`` (the password in
            ``database_password_file``, never in the URL).
        database_password_file: a file only its owner can read (0600) holding the database
            password. The password itself is refused from the environment and the TOML
            file (:func:`load_settings`).
        database_password: the database password given in code (embedding, tests); never
            logged.
        host: the address uvicorn binds.
        port: the port uvicorn binds.
        ssl_certfile: TLS certificate (PEM); required to bind a non-loopback address.
        ssl_keyfile: TLS private key (PEM); refused when group or others can read it.
        allow_insecure_http: serve plain HTTP on a non-loopback address anyway (refused
            unless set; logged as a warning on every start).
        max_concurrent_runs: federated runs executed at the same time.
        approval_grace_seconds: how long a job that has enough approvals waits for targeted
            nodes whose policy has not answered yet (their services may be offline).
        token_cache_seconds: how long a verified token is remembered in memory, so status
            reads skip the database (a revocation through this process
            clears it at once; one made by another process holds within this period).
        engine: the federation engine approved jobs run on: ``none`` (they wait; a runner
            may be given in code or with ``serve --runner``) or ``deployment`` (Flower's
            deployment engine: a SuperLink started beside the coordinator).
        pki_dir: the federation's PKI (``hamanasu pki init``): the SuperLink's TLS
            certificate and key; default ``<data_dir>/pki``.
        superlink_host: the address the SuperLink's Fleet API binds (SuperNodes dial it).
        superlink_port: its port; it serves the Fleet API only.
        superlink_control_port: the loopback port of the SuperLink's Control and Runtime
            APIs, which only the coordinator and the SuperLink's own processes call
            (0: a free port picked at each start).
        secagg_max_records: bound of any node's training set for SecAgg+ (``max_weight``),
            when a job's spec does not set ``secure_aggregation.max_weight``.
        run_start_timeout: seconds a run waits for its nodes' SuperNodes to come online.
        run_timeout: seconds a run may take before it is stopped (0: no limit).
    """

    model_config = SettingsConfigDict(
        env_prefix="HAMANASU_",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Path("coordinator-data")
    database_url: str | None = None
    database_password_file: Path | None = None
    database_password: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8750, ge=1, le=65535)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    allow_insecure_http: bool = False
    access_log: bool = True
    max_concurrent_runs: int = Field(default=1, ge=1, le=64)
    approval_grace_seconds: float = Field(default=30.0, ge=0, le=7 * 86400)
    token_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    engine: Literal["none", "deployment"] = "none"
    pki_dir: Path | None = None
    superlink_host: str = "127.0.0.1"
    superlink_port: int = Field(default=9092, ge=1, le=65535)
    superlink_control_port: int = Field(default=0, ge=0, le=65535)
    secagg_max_records: int = Field(default=65536, ge=1, le=2**31 - 1)
    run_start_timeout: float = Field(default=120.0, gt=0, le=86400)
    run_timeout: float = Field(default=0.0, ge=0, le=30 * 86400)

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "database_url: only sqlite:/// and postgresql+psycopg:// URLs are supported"
            )
        if value is not None and value.startswith("postgres") and not _has_psycopg():
            raise ValueError(
                "database_url: PostgreSQL needs its driver: pip install 'hamanasu[postgres]'"
            )
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
        """Order the sources: code, environment, TOML file, defaults."""
        path = _TOML.get() or (
            Path(os.environ["HAMANASU_CONFIG"]) if os.environ.get("HAMANASU_CONFIG") else None
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            if not path.is_file():
                raise SettingsError(f"config: {path} does not exist", field="config")
            sources.append(
                TomlConfigSettingsSource(
                    settings_cls, toml_file=path, toml_table_header=("coordinator",)
                )
            )
        return tuple(sources)

    # -- derived values ------------------------------------------------------------------
    def url(self) -> str:
        """Return the database URL (with the password filled in, if one is set)."""
        if self.database_url is None:
            return f"sqlite:///{(self.data_dir / 'coordinator.sqlite').resolve()}"
        password = self.database_password
        if password is None and self.database_password_file is not None:
            try:
                password = SecretStr(
                    read_secret_file(self.database_password_file, "database_password_file")
                )
            except SecretFileError as exc:
                raise SettingsError(str(exc), field=exc.field) from None
        if password is None:
            return self.database_url
        from sqlalchemy.engine import make_url

        return (
            make_url(self.database_url)
            .set(password=password.get_secret_value())
            .render_as_string(hide_password=False)
        )

    def safe_url(self) -> str:
        """Return the database URL with any password masked, for logs."""
        from sqlalchemy.engine import make_url

        return make_url(self.url()).render_as_string(hide_password=True)

    def is_loopback(self) -> bool:
        """Tell whether ``host`` is a loopback address (or ``localhost``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_secure(self) -> None:
        """Refuse insecure settings, naming the setting; warn about tolerated ones.

        Raises:
            SettingsError: plain HTTP on a non-loopback address without
                ``allow_insecure_http``; half a TLS pair; a password in the database URL.
        """
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise SettingsError(
                "ssl_certfile/ssl_keyfile: give both or neither", field="ssl_certfile"
            )
        tls = self.ssl_certfile is not None
        for name in ("ssl_keyfile", "database_password_file"):
            path = getattr(self, name)
            if path is not None:
                try:
                    check_private_file(path, name)
                except SecretFileError as exc:
                    raise SettingsError(str(exc), field=name) from None
        if not tls and not self.is_loopback():
            if not self.allow_insecure_http:
                raise SettingsError(
                    f"host: refusing to serve tokens over plain HTTP on {self.host}; set "
                    "ssl_certfile and ssl_keyfile, bind 127.0.0.1, or set allow_insecure_http",
                    field="host",
                )
            log.warning(
                "INSECURE: serving plain HTTP on %s (allow_insecure_http is set); "
                "API tokens travel in the clear",
                self.host,
            )
        if self.database_url:
            from sqlalchemy.engine import make_url

            if make_url(self.database_url).password:
                raise SettingsError(
                    "database_url: holds a password; put it in a 0600 file named by "
                    "database_password_file (HAMANASU_DATABASE_PASSWORD_FILE)",
                    field="database_url",
                )


def load_settings(config_file: Path | None = None, **overrides: Any) -> CoordinatorSettings:
    """Build the settings from ``overrides``, the environment and ``config_file`` (TOML).

    A secret (:data:`SECRET_SETTINGS`) given as a value in the environment or the TOML
    file is refused: it belongs in a 0600 file named by its ``_file`` setting.

    Returns:
        The checked settings.

    Raises:
        SettingsError: a value is invalid (named), a secret came as a value, a key or
            password file is readable by others, or the combination is insecure.
    """
    path = config_file or (
        Path(os.environ["HAMANASU_CONFIG"]) if os.environ.get("HAMANASU_CONFIG") else None
    )
    table: dict[str, Any] = {}
    if path is not None and path.is_file():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8")).get("coordinator", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config: cannot read {path}: {exc}", field="config") from None
    try:
        refuse_secret_values(SECRET_SETTINGS, table=table, env_prefix="HAMANASU_")
    except SecretFileError as exc:
        raise SettingsError(str(exc), field=exc.field) from None
    token = _TOML.set(config_file)
    try:
        settings = CoordinatorSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise SettingsError(
            f"{field}: {msg}" if not msg.startswith(field) else msg, field=field
        ) from None
    finally:
        _TOML.reset(token)
    settings.check_secure()
    return settings
