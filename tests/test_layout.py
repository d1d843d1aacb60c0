"""The layering is real: imports run one way, and nothing goes around that rule.

``docs/architecture.md`` "Layers": nodes and coordinator import federation, federation
imports policies, policies imports consent; coordinator and nodes never import each other.
Import statements are only half of it: a module can also reach another layer through
``importlib.import_module`` / ``__import__`` or by naming its modules in a string that
something else imports (a preload list, an app manifest, ``python -m``). Both are
checked, the strings as the AST sees them and as a text search sees them (so a name
built into a docstring-like quote is caught too). The packages' public faces are checked
as well: every ``__init__.py`` has a one-line docstring and a sorted ``__all__``, and no
source file grows past 600 lines (migrations aside).
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("consent", "policies", "federation", "nodes", "coordinator")
ENTRY_POINT = "hamanasu"
OURS = (*PACKAGES, ENTRY_POINT)
# What each package may import among ours (docs/architecture.md, "Layers").
ALLOWED = {
    "consent": set(),
    "policies": {"consent"},
    "federation": {"consent", "policies"},
    "nodes": {"consent", "policies", "federation"},
    "coordinator": {"federation", "policies"},
}
MAX_LINES = 600
# Files still over MAX_LINES while they are being split; the test fails once one of them
# fits, so the entry is removed with the split.
OVERSIZE_ALLOWED: set[str] = set()
_IMPORT_CALLS = {"import_module", "__import__"}


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _forbidden(package: str) -> set[str]:
    return set(OURS) - ALLOWED[package] - {package}


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_module(name: str) -> bool:
    """True if ``name`` (``pkg.mod`` or ``pkg.mod:attr``) is one of our modules.

    Logger names (``hamanasu.node``) and SQL column references (``nodes.name``) look
    like module names but name no module, so they are not references to another layer.
    """
    parts = name.split(":")[0].split(".")
    path = ROOT.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_strings(tree: ast.AST, forbidden: set[str]) -> list[str]:
    """Module names of ``forbidden`` packages in strings: import calls and ``pkg.mod[:attr]``."""
    names = "|".join(sorted(forbidden))
    module_ref = re.compile(rf"^({names})(\.[A-Za-z_]\w*)*(:[A-Za-z_][\w.]*)?$")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in _IMPORT_CALLS and node.args:
            arg = node.args[0]
            if (
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and arg.value.split(".")[0] in forbidden
            ):
                found.append(f"imports {arg.value!r} through {_call_name(node)}()")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if module_ref.match(text) and ("." in text or ":" in text) and _is_module(text):
                found.append(f"names {text!r} in a string")
    return found


def _text_references(text: str, forbidden: set[str]) -> list[str]:
    """What a text search finds: ``import_module("pkg`` and quoted ``"pkg.mod"`` / ``"pkg.mod:``."""
    found = []
    for pkg in sorted(forbidden):
        call = re.compile(rf"(import_module|__import__)\(\s*['\"]{pkg}")
        quoted = re.compile(rf"['\"]({pkg}\.[a-z_]+)(:|['\"])")
        found += [f"text {m.group(0)!r}" for m in call.finditer(text)]
        found += [f"text {m.group(0)!r}" for m in quoted.finditer(text) if _is_module(m.group(1))]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_follow_the_layout(package):
    bad = []
    for path in _sources(package):
        ours = _imports(ast.parse(path.read_text(encoding="utf-8"))) & set(OURS)
        ours.discard(package)
        for name in sorted(ours - ALLOWED[package]):
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_or_module_name_in_a_string_goes_around_the_layout(package):
    bad = []
    for path in _sources(package):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for what in _module_strings(tree, _forbidden(package)) + _text_references(
            text, _forbidden(package)
        ):
            bad.append(f"{path.relative_to(ROOT)} {what}")
    assert not bad, "\n".join(bad)


def test_the_string_check_catches_each_back_door():
    forbidden = _forbidden("federation")
    cases = {
        "importlib": 'import importlib\nm = importlib.import_module("coordinator.flower_control")',
        "dunder": 'm = __import__("nodes.flower_client")',
        "preload": 'PRELOAD = ("numpy", "nodes.client_app")',
        "manifest": 'APP = "nodes.flower_client:app"',
        "entry point": 'CMD = ["python", "-m", "hamanasu.cli"]',
    }
    for what, source in cases.items():
        found = _module_strings(ast.parse(source), forbidden) + _text_references(source, forbidden)
        assert found, what
    allowed = 'import importlib\nm = importlib.import_module("federation.executor")\nx = "numpy"'
    assert _module_strings(ast.parse(allowed), forbidden) == []
    assert _text_references(allowed, forbidden) == []


def _inits() -> list[Path]:
    return sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("__init__.py"))


@pytest.mark.parametrize("init", _inits(), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_package_has_one_line_docstring_and_sorted_all(init):
    tree = ast.parse(init.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc and "\n" not in doc.strip(), f"{init.relative_to(ROOT)}: one-line docstring"
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == "__all__"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    ]
    assert len(values) == 1, f"{init.relative_to(ROOT)}: one __all__"
    names = ast.literal_eval(values[0])
    assert list(names) == sorted(names), f"{init.relative_to(ROOT)}: __all__ not sorted"
    bound = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    for node in tree.body:
        # PEP 562 lazy exports: a module-level _LAZY_EXPORTS dict names what __getattr__ gives
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY_EXPORTS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            bound |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
    folder = init.parent
    missing = [
        n
        for n in names
        if n not in bound and not (folder / f"{n}.py").exists() and not (folder / n).is_dir()
    ]
    assert not missing, f"{init.relative_to(ROOT)}: __all__ names undefined {missing}"


def _oversize() -> dict[str, int]:
    sizes = {}
    for pkg in OURS:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                sizes[str(path.relative_to(ROOT))] = lines
    return sizes


def test_no_source_file_over_600_lines():
    sizes = _oversize()
    over = {p: n for p, n in sizes.items() if p not in OVERSIZE_ALLOWED}
    assert not over, f"over {MAX_LINES} lines: {over}"
    fitted = sorted(OVERSIZE_ALLOWED - set(sizes))
    assert not fitted, f"now within {MAX_LINES} lines, remove from OVERSIZE_ALLOWED: {fitted}"
