"""DESIGN.md's layout: imports run one way, and coordinator and nodes never import each other."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("consent", "policies", "federation", "nodes", "coordinator")
# What each package may import among ours (DESIGN.md "Layout").
ALLOWED = {
    "consent": set(),
    "policies": {"consent"},
    "federation": {"consent", "policies"},
    "nodes": {"consent", "policies", "federation"},
    "coordinator": {"federation", "policies"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_follow_the_layout(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        ours = _imports(path) & (set(PACKAGES) | {"hamanasu"})
        ours.discard(package)
        for name in sorted(ours - ALLOWED[package]):
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_has_docstring_and_sorted_all(package):
    init = ROOT / package / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{package}/__init__.py needs a one-line docstring"
