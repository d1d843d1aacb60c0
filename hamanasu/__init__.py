"""The hamanasu command, the researchers' notebook client, and the Flower app pairing both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["Client", "FLOWER_APP_DIR", "Results"]

#: The Flower app (``flwr build`` / ``flwr run`` this folder): the coordinator's ServerApp
#: and the nodes' ClientApp, the one place that names both.
FLOWER_APP_DIR = Path(__file__).resolve().parent / "flower-app"


#: Names imported on first use (PEP 562), so the CLI starts without pandas and httpx.
_LAZY_EXPORTS = {"Client": "hamanasu.client", "Results": "hamanasu.client"}


def __getattr__(name: str) -> Any:
    """Return a lazily imported public name (:data:`_LAZY_EXPORTS`).

    Raises:
        AttributeError: no such name.
    """
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'hamanasu' has no attribute {name!r}")
