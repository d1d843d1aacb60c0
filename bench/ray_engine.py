"""The "before" engine of the benches: Flower's own simulation engine (Ray, 2 actors).

``run_on_ray`` is what the embedded runner did before it ran in one process
(``flwr.simulation.run_simulation``: Ray, its actors and an in-memory SuperLink started
per job, messages moved through queues polled every 0.1 s). ``use_ray_engine`` makes
every embedded job of this process run on it, so a bench measures both engines with the
same jobs in one run.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any


def run_on_ray(
    server_app: Any,
    client_app: Any,
    n_nodes: int,
    *,
    num_cpus: int | None = None,
    verbose: bool = False,
) -> None:
    """Run ``server_app`` against ``n_nodes`` virtual nodes on Flower's Ray simulation."""
    from flwr.simulation import run_simulation

    from federation.embedded import quiet_flower

    quiet_flower()
    cpus = num_cpus or os.cpu_count() or 1
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
                    "logging_level": "error",
                    "log_to_driver": verbose,
                },
            },
            verbose_logging=verbose,
        )


def use_ray_engine() -> None:
    """Make every embedded job of this process (demo, simulate, jobs) run on Ray."""
    import federation.embedded
    import hamanasu.analytics_run
    import hamanasu.training_run

    for module in (federation.embedded, hamanasu.analytics_run, hamanasu.training_run):
        module.run_embedded = run_on_ray  # type: ignore[attr-defined]


if __name__ == "__main__":  # python bench/ray_engine.py <hamanasu arguments>
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    use_ray_engine()
    from hamanasu.cli import main

    main(sys.argv[1:])
