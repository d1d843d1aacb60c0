"""Fixtures shared by every test folder."""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Callable

import pytest


def _hamanasu_in_process(*args: object) -> subprocess.CompletedProcess[str]:
    """Run ``hamanasu ARGS`` through the CLI's own entry point in this process.

    The same ``main`` that ``python -m hamanasu`` runs, without the second or two of
    imports a new interpreter pays: for bad-input checks, where each command stops
    before doing any work. An exception that escapes ``main`` (a traceback the user
    would see) is not caught: it fails the test.

    Returns:
        The exit code, stdout and stderr, shaped like ``subprocess.run``'s result.
    """
    from hamanasu.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=err)
    return subprocess.CompletedProcess(["hamanasu", *argv], code, out.getvalue(), err.getvalue())


@pytest.fixture
def hamanasu_in_process() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Return a function running ``hamanasu ARGS`` in this process (see above)."""
    return _hamanasu_in_process
