"""The analytics package loads its parts on first use; every public name still resolves."""

from __future__ import annotations

import subprocess
import sys

import federation.analytics as analytics


def test_every_public_name_resolves_to_its_module_object() -> None:
    for name in analytics.__all__:
        value = getattr(analytics, name)
        home = getattr(value, "__module__", None)
        assert home is None or home.startswith("federation.analytics"), (name, home)
    assert callable(analytics.glm_result)  # the function, not its module of the same name


def test_an_mpc_party_loads_neither_pandas_nor_scipy_stats() -> None:
    code = (
        "import sys; import federation.linkage.mpc_party, federation.linkage.mpc_glm, "
        "federation.linkage.mpc_stats; "
        "print(sorted(m for m in ('pandas', 'scipy.stats', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
