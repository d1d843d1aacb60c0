"""The hamanasu command: mounts each package's CLI group and the Flower app that pairs them."""

from pathlib import Path

__all__ = ["FLOWER_APP_DIR"]

#: The Flower app (``flwr build`` / ``flwr run`` this folder): the coordinator's ServerApp
#: and the nodes' ClientApp, the one place that names both.
FLOWER_APP_DIR = Path(__file__).resolve().parent / "flower-app"
