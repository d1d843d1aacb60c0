"""The contract of our patches of Flower's internals: each target is still where we patch it,
each patch changes what it claims, and a moved target makes the patch fail loudly."""

from __future__ import annotations

import time

import pytest

from federation import flower_patches as fp


@pytest.fixture
def pulls():
    """The object-pull functions, their keyword defaults restored afterwards."""
    functions = fp._pull_functions()
    saved = [dict(fn.__kwdefaults__ or {}) for fn in functions]
    yield functions
    for fn, defaults in zip(functions, saved, strict=True):
        fn.__kwdefaults__ = defaults


def test_every_patch_target_is_where_we_patch_it() -> None:
    fp.check_patch_targets()


def test_fast_and_bounded_object_pulls_change_every_pull_function(pulls) -> None:
    before = [dict(fn.__kwdefaults__) for fn in pulls]
    fp.fast_object_pulls(0.01, 0.3)
    fp.bound_object_pulls(7)
    for fn, old in zip(pulls, before, strict=True):
        assert fn.__kwdefaults__["initial_backoff"] == 0.01 != old["initial_backoff"]
        assert fn.__kwdefaults__["backoff_cap"] == 0.3 != old["backoff_cap"]
        assert fn.__kwdefaults__["max_time"] == 7.0


def test_a_pull_function_that_lost_its_defaults_fails_loudly(pulls) -> None:
    pulls[0].__kwdefaults__ = {k: v for k, v in pulls[0].__kwdefaults__.items() if k != "max_time"}
    with pytest.raises(fp.FlowerPatchError, match="max_time"):
        fp.bound_object_pulls(5)
    with pytest.raises(fp.FlowerPatchError, match="max_time"):
        fp.check_patch_targets()


def test_supernode_sleeps_are_capped_and_a_moved_clock_fails_loudly(monkeypatch) -> None:
    from flwr.supernode import start_client_internal

    monkeypatch.setattr(start_client_internal, "time", time)
    fp.cap_supernode_sleeps(0.01, 0.001)
    t0 = time.monotonic()
    start_client_internal.time.sleep(3)  # Flower's idle poll
    start_client_internal.time.sleep(0.5)  # a local wait
    assert time.monotonic() - t0 < 1.0
    assert start_client_internal.time.monotonic is time.monotonic
    monkeypatch.delattr(start_client_internal, "time")
    with pytest.raises(fp.FlowerPatchError, match="start_client_internal"):
        fp.cap_supernode_sleeps()


def test_traced_functions_must_exist(monkeypatch) -> None:
    from flwr.supernode.runtime import run_clientapp

    monkeypatch.delattr(run_clientapp, "push_task_output")
    with pytest.raises(fp.FlowerPatchError, match="push_task_output"):
        fp.trace_run_clientapp()
    with pytest.raises(fp.FlowerPatchError, match="push_task_output"):
        fp.check_patch_targets()


def test_traced_functions_record_start_and_end(monkeypatch, tmp_path) -> None:
    import json

    from flwr.supernode.runtime import run_clientapp

    from federation.deploy_trace import TRACE_ENV

    for name in fp._CLIENTAPP_TRACED:
        monkeypatch.setattr(run_clientapp, name, lambda *a, **k: "done")
    monkeypatch.setenv(TRACE_ENV, str(tmp_path / "trace.jsonl"))
    fp.trace_run_clientapp()
    assert run_clientapp.push_message() == "done"
    events = [json.loads(line)["event"] for line in (tmp_path / "trace.jsonl").open()]
    assert events == ["child.push_message.start", "child.push_message.end"]


def test_superlink_served_twice_replaces_the_uvicorn_flower_calls(monkeypatch) -> None:
    import importlib

    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")
    monkeypatch.setattr(cli, "uvicorn", cli.uvicorn)  # restored afterwards
    gates = []
    fp.serve_superlink_twice("127.0.0.1", 9, lambda app, port: gates.append(port) or app)
    assert type(cli.uvicorn).__name__ == "_TwoListenerUvicorn"
    assert cli.uvicorn.Config is importlib.import_module("uvicorn").Config  # the rest is uvicorn's
    with pytest.raises(SystemExit, match="must differ"):
        cli.uvicorn.run(app=None, host="127.0.0.1", port=9)
    monkeypatch.delattr(cli, "uvicorn")
    with pytest.raises(fp.FlowerPatchError, match="uvicorn"):
        fp.serve_superlink_twice("127.0.0.1", 9, lambda app, port: app)


def test_a_grid_with_a_new_abstract_method_fails_loudly(monkeypatch) -> None:
    from flwr.serverapp import Grid

    monkeypatch.setattr(Grid, "__abstractmethods__", Grid.__abstractmethods__ | {"new_call"})
    with pytest.raises(fp.FlowerPatchError, match="new_call"):
        fp.check_patch_targets()
