"""The node names what its SuperNode's warm executor imports: every module exists, and the
ClientApp the Flower app runs is among them (else each task would import it again)."""

from __future__ import annotations

import importlib.util
import tomllib

from hamanasu import FLOWER_APP_DIR
from nodes.supernode import CLIENT_PRELOAD


def test_every_preloaded_module_exists() -> None:
    missing = [m for m in CLIENT_PRELOAD if importlib.util.find_spec(m) is None]
    assert missing == []


def test_the_flower_apps_client_app_is_preloaded() -> None:
    app = tomllib.loads((FLOWER_APP_DIR / "pyproject.toml").read_text())
    client_module = app["tool"]["flwr"]["app"]["components"]["clientapp"].split(":")[0]
    assert client_module in CLIENT_PRELOAD
