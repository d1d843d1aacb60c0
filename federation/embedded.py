"""The embedded runner: a whole federation on one machine, on Flower's simulation engine.

It takes the ServerApp and the ClientApp as arguments (it knows neither the coordinator
nor the nodes) and runs them with Flower's Ray backend, one virtual SuperNode per node.
Telemetry and update checks are off, and Flower's and Ray's state go under the given
data folder.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.server import ServerApp

__all__ = ["quiet_flower", "run_embedded"]


def quiet_flower(state_dir: Path | None = None) -> None:
    """Turn off Flower's telemetry and update checks, and point its state at ``state_dir``."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    base = state_dir or Path(tempfile.gettempdir()) / "hamanasu"
    os.environ.setdefault("FLWR_HOME", str(base / "flwr"))
    os.environ.setdefault("RAY_TMPDIR", str(base / "ray"))
    Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)


def run_embedded(
    server_app: ServerApp,
    client_app: ClientApp,
    n_nodes: int,
    *,
    num_cpus: int | None = None,
    verbose: bool = False,
) -> None:
    """Run ``server_app`` against ``n_nodes`` virtual nodes running ``client_app``.

    Raises:
        ValueError: ``n_nodes`` < 1.
    """
    if n_nodes < 1:
        raise ValueError("n_nodes must be at least 1")
    quiet_flower()
    import warnings

    from flwr.simulation import run_simulation

    cpus = num_cpus or os.cpu_count() or 1
    if not verbose:
        for name in ("flwr", "ray"):
            logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=n_nodes,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {
                    "num_cpus": cpus,
                    "include_dashboard": False,
                    "logging_level": "error" if not verbose else "info",
                    "log_to_driver": verbose,
                },
            },
            verbose_logging=verbose,
        )
