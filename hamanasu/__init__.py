"""The hamanasu command, the researchers' notebook client, and the Flower app pairing both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["FLOWER_APP_DIR", "Client", "Results"]

#: The Flower app (``flwr build`` / ``flwr run`` this folder): the coordinator's ServerApp
#: and the nodes' ClientApp, the one place that names both.
FLOWER_APP_DIR = Path(__file__).resolve().parent / "flower-app"


def __getattr__(name: str) -> Any:
    """Import the notebook client on first use, so the CLI starts without pandas."""
    if name in ("Client", "Results"):
        from hamanasu import client

        return getattr(client, name)
    raise AttributeError(f"module 'hamanasu' has no attribute {name!r}")
