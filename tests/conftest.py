"""Suite-wide: how tests are shared between pytest-xdist workers (``make test`` runs two).

Each test module stays on one worker, so a module's fixtures (a simulated federation, a
generated scenario) are built once. The tests that start Flower's deployment engine as
real processes (a SuperLink, SuperNodes, node services) share one group and so run one
after the other: each needs most of a 2-core machine, and they check that a round goes on
within a stage timeout after a node dies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: Test files and folders whose tests start Flower deployment processes.
FLOWER_PROCESSES = ("deployment/", "e2e/test_deployment_consortium.py")

_ROOT = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test an ``xdist_group``: its module, or the Flower-process group."""
    for item in items:
        rel = Path(item.fspath).resolve().relative_to(_ROOT).as_posix()
        heavy = any(rel.startswith(prefix) for prefix in FLOWER_PROCESSES)
        item.add_marker(pytest.mark.xdist_group("flower-processes" if heavy else rel))
