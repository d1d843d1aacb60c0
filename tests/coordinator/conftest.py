"""Fixtures of the coordinator tests: settings, stores on SQLite and PostgreSQL, apps, tokens."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app, open_store
from coordinator.db import make_engine
from coordinator.settings import CoordinatorSettings, load_settings
from coordinator.store import Store

PG_ENV = "HAMANASU_TEST_POSTGRES_URL"

#: The organisation test researchers belong to, and its one project.
UNIVERSITY, PROJECT = "hokkaido-university", "iwamizawa-mch-2017"


def fast_settings(data_dir: Path, **kw: Any) -> CoordinatorSettings:
    """Coordinator settings for a test: ``data_dir`` and whatever else is given."""
    return load_settings(data_dir=data_dir, **kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[CoordinatorSettings, Any, str | None]]:
    """(settings, engine, schema) on SQLite, then on PostgreSQL in a throwaway schema."""
    settings = fast_settings(tmp_path / "coord")
    if request.param == "sqlite":
        engine = make_engine(settings.url())
        yield settings, engine, None
        engine.dispose()
        return
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL not available: set {PG_ENV}")
    from sqlalchemy import text

    schema = f"hmn_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, schema=schema)
    try:
        yield settings, engine, schema
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(backend: tuple[CoordinatorSettings, Any, str | None]) -> Store:
    settings, engine, schema = backend
    return open_store(settings, engine=engine, schema=schema)


class Api:
    """A TestClient with the operator's token and helpers to add principals and nodes."""

    def __init__(self, client: TestClient, operator: str) -> None:
        self.client, self.operator = client, operator

    def h(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def organisation(
        self,
        name: str = UNIVERSITY,
        type_: str = "academic",
        projects: tuple[str, ...] = (PROJECT,),
    ) -> str:
        """Register an organisation unless it exists; return its name."""
        known = self.client.get("/organisations", headers=self.h(self.operator)).json()
        if name not in {o["name"] for o in known}:
            r = self.client.post(
                "/organisations",
                json={"name": name, "type": type_, "projects": [{"name": p} for p in projects]},
                headers=self.h(self.operator),
            )
            assert r.status_code == 201, r.text
        return name

    def principal(
        self, name: str, role: str, node: str | None = None, organisation: str | None = None
    ) -> str:
        """Register a principal (a researcher: of ``organisation``, default the university)."""
        if role == "researcher" and organisation is None:
            organisation = self.organisation()
        r = self.client.post(
            "/principals",
            json={"name": name, "role": role, "node": node, "organisation": organisation},
            headers=self.h(self.operator),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"]["token"])

    def node(self, name: str, **caps: Any) -> str:
        """Register a node and its human admin; return the admin's token."""
        r = self.client.post("/nodes", json={"name": name, **caps}, headers=self.h(self.operator))
        assert r.status_code == 201, r.text
        return self.principal(f"{name}-admin", "node_admin", name)

    def service(self, name: str) -> str:
        """Issue node ``name``'s service its token (the only one its polls and pushes take)."""
        r = self.client.post(f"/nodes/{name}/service-token", headers=self.h(self.operator))
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """An app on SQLite without a runner (approved jobs wait)."""
    settings = fast_settings(tmp_path / "coord")
    app = create_app(settings)
    token = bootstrap_operator(app.state.store).token
    with TestClient(app) as client:
        yield Api(client, token)
