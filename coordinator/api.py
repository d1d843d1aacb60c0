"""The coordinator's FastAPI application: ``create_app(settings, runner)``.

Building the app migrates the database (Alembic, programmatically) and opens the store;
starting it (the lifespan) fails the jobs a dead coordinator left running and queues
the approved ones; stopping it tells running jobs to stop. Errors follow one catalogue
(:mod:`coordinator.errors`): ``{"detail": ..., "code": ..., "field": ...}`` with the
catalogued status, and nothing internal (tokens, hashes, tracebacks) in a body. Bodies
over 1 MiB (ledger uploads: their chunk size) get 413 and JSON nested too deeply 422
(:class:`federation.http_limits.RequestLimits`) before any route reads them.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from coordinator.auth import BadTokenThrottle, TokenHasher, TokenVerifier, load_token_key
from coordinator.db import make_engine, migrate
from coordinator.errors import (
    CATALOGUE,
    Conflict,
    CoordinatorError,
    InvalidSpec,
    SettingsError,
    TooManyRequests,
    Unauthorized,
)
from coordinator.lifecycle import Lifecycle
from coordinator.routes import api_router
from coordinator.routes.health import router as health_router
from coordinator.runner import Runner
from coordinator.schemas import PrincipalCreate, Role, TokenIssued
from coordinator.settings import CoordinatorSettings
from coordinator.store import Store, utc_now
from federation.audit_models import MAX_CHUNK_BYTES
from federation.http_limits import RequestLimits

if TYPE_CHECKING:
    from coordinator.flower_engine import FlowerEngine

__all__ = ["bootstrap_operator", "create_app", "open_store"]

log = logging.getLogger("hamanasu.coordinator")


def open_store(
    settings: CoordinatorSettings,
    *,
    engine: Engine | None = None,
    schema: str | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Store:
    """Create the data folder (0700), migrate the database and return the store."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = engine or make_engine(settings.url(), schema=schema)
    migrate(engine, schema=schema)
    try:
        hasher = TokenHasher(load_token_key(settings.data_dir))
    except ValueError as exc:
        raise SettingsError(str(exc), field="data_dir") from None
    return Store(engine, hasher, TokenVerifier(hasher, settings.token_cache_seconds), clock)


def bootstrap_operator(store: Store, name: str = "operator") -> TokenIssued:
    """Create the first operator and return its token (to print once).

    Raises:
        Conflict: an operator already exists.
    """
    if any(p.role == Role.OPERATOR for p in store.list_principals()):
        raise Conflict("an operator exists already; issue tokens through the API", field="name")
    return store.create_principal(PrincipalCreate(name=name, role=Role.OPERATOR))[1]


def _error_body(exc: CoordinatorError) -> dict[str, Any]:
    if isinstance(exc, InvalidSpec):
        field = exc.field or "spec"
        return {
            "detail": [
                {
                    "loc": ["body", "spec", *field.split(".")],
                    "msg": f"{field}: {exc.message}",
                    "type": exc.code,
                }
            ],
            "code": exc.code,
            "field": field,
        }
    return {"detail": exc.message, "code": exc.code, "field": exc.field}


def create_app(
    settings: CoordinatorSettings,
    runner: Runner | None = None,
    *,
    store: Store | None = None,
    schema: str | None = None,
    engine: FlowerEngine | None = None,
) -> FastAPI:
    """Build the coordinator app.

    Args:
        settings: checked settings (see :func:`coordinator.settings.load_settings`).
        runner: the federation engine's runner (None: approved jobs wait for one).
        store: an open store (tests); by default one is opened from ``settings``.
        schema: PostgreSQL schema to use (tests).
        engine: the started Flower deployment engine (its SuperLink takes the nodes'
            SuperNode keys); its runner is used when ``runner`` is None.

    Returns:
        The FastAPI app; ``app.state.store`` and ``app.state.lifecycle`` hold the service.
    """
    store = store or open_store(settings, schema=schema)
    if engine is not None:
        engine.restore_keys(store.supernode_keys())
    if runner is None and engine is not None:
        runner = engine.runner()
    lifecycle = Lifecycle(
        store, runner, settings.max_concurrent_runs, settings.approval_grace_seconds
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle.recover()
        # Everything alive after start-up (modules, routes, schemas) lives as long as the
        # service: keep it out of the collector's generations, so a full collection while
        # serving walks only request garbage (fewer long pauses in the read latency tail).
        gc.collect()
        gc.freeze()
        log.info(
            "coordinator up: database %s, runner %s", settings.safe_url(), type(runner).__name__
        )
        try:
            yield
        finally:
            lifecycle.shutdown(wait=False)

    app = FastAPI(
        title="Hamanasu coordinator",
        version="0.1.0",
        description="Jobs, approvals and results of the Hamanasu federation. Every call needs "
        "`Authorization: Bearer <token>`; roles: researcher, node_admin, auditor, operator.",
        lifespan=lifespan,
    )
    # Only a node's ledger upload takes more than the default 1 MiB.
    upload = MAX_CHUNK_BYTES + 2 * 1024 * 1024
    app.add_middleware(RequestLimits, large=[(r"/nodes/[^/]+/audit/(entries|snapshot)", upload)])
    app.state.store = store
    app.state.lifecycle = lifecycle
    app.state.token_throttle = BadTokenThrottle()
    app.state.settings = settings
    app.state.engine = engine

    @app.exception_handler(CoordinatorError)
    async def _coordinator_error(_: Request, exc: CoordinatorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return JSONResponse(
            _error_body(exc), status_code=CATALOGUE.get(exc.code, 400), headers=headers
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        return JSONResponse(
            {"detail": "conflicts with stored data", "code": "conflict", "field": None},
            status_code=409,
        )

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", type(exc).__name__)
        return JSONResponse(
            {"detail": "the database is unavailable", "code": "unavailable", "field": None},
            status_code=503,
        )

    app.include_router(health_router)
    app.include_router(api_router)
    from coordinator.console import mount_console

    mount_console(app)
    return app
