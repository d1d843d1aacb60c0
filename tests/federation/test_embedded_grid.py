"""The in-process grid: messages reach each virtual node's ClientApp as copies, replies come
back to the ServerApp, a failing node answers with an error, and node state persists."""

from __future__ import annotations

import numpy as np
import pytest

from federation.embedded import run_embedded


def _apps(fail_partition: int | None = None):
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    client = ClientApp()

    @client.query()
    def query(msg: Message, context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid == fail_partition:
            raise RuntimeError("node broke")
        seen = int(context.state.config_records.get("seen", ConfigRecord({"n": 0}))["n"]) + 1
        context.state.config_records["seen"] = ConfigRecord({"n": seen})
        arr = msg.content.array_records["x"].to_numpy_ndarrays()[0]
        arr += 100  # a node changing what it received must not change the server's copy
        content = RecordDict(
            {"r": ConfigRecord({"pid": pid, "seen": seen, "sum": float(arr.sum())})}
        )
        return Message(content, reply_to=msg)

    server = ServerApp()
    out: dict = {"rounds": []}

    @server.main()
    def main(grid, context) -> None:
        x = np.ones(3)
        for _ in range(2):
            msgs = [
                Message(RecordDict({"x": ArrayRecord([x])}), node, "query")
                for node in grid.get_node_ids()
            ]
            replies = list(grid.send_and_receive(msgs, timeout=30))
            out["rounds"].append(replies)
        out["x"] = x

    return server, client, out


def test_every_node_answers_with_its_own_partition_and_state() -> None:
    server, client, out = _apps()
    run_embedded(server, client, 4, num_cpus=2)
    assert len(out["rounds"]) == 2
    for round_no, replies in enumerate(out["rounds"], start=1):
        good = [r.content.config_records["r"] for r in replies if not r.has_error()]
        assert sorted(int(r["pid"]) for r in good) == [0, 1, 2, 3]
        assert {int(r["seen"]) for r in good} == {round_no}
        assert {float(r["sum"]) for r in good} == {303.0}
    assert out["x"].tolist() == [1.0, 1.0, 1.0]


def test_a_failing_node_answers_with_an_error_and_the_others_still_reply() -> None:
    server, client, out = _apps(fail_partition=1)
    run_embedded(server, client, 3)
    replies = out["rounds"][0]
    assert len(replies) == 3
    errors = [r for r in replies if r.has_error()]
    assert len(errors) == 1 and "node broke" in errors[0].error.reason


def test_no_nodes_is_refused() -> None:
    server, client, _ = _apps()
    with pytest.raises(ValueError, match="n_nodes"):
        run_embedded(server, client, 0)


def _sleeping_apps(seconds_by_partition):
    import time

    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    client = ClientApp()

    @client.query()
    def query(msg: Message, context) -> Message:
        pid = int(context.node_config["partition-id"])
        time.sleep(seconds_by_partition(pid))
        return Message(RecordDict({"r": ConfigRecord({"pid": pid})}), reply_to=msg)

    server = ServerApp()
    out: dict = {}

    @server.main()
    def main(grid, context) -> None:
        msgs = [Message(RecordDict(), node, "query") for node in grid.get_node_ids()]
        replies = grid.send_and_receive(msgs, timeout=1.5)
        out["pids"] = sorted(int(r.content.config_records["r"]["pid"]) for r in replies)

    return server, client, out


def test_an_exchange_longer_than_the_timeout_still_gets_every_reply() -> None:
    # Ten nodes taking turns, 0.2 s each: 2 s in all, past the 1.5 s timeout, yet every
    # node answered in time for the next reply.
    server, client, out = _sleeping_apps(lambda pid: 0.2)
    run_embedded(server, client, 10)
    assert out["pids"] == list(range(10))


def test_a_node_that_hangs_past_the_timeout_is_left_out() -> None:
    server, client, out = _sleeping_apps(lambda pid: 6.0 if pid == 2 else 0.0)
    run_embedded(server, client, 4, num_cpus=4)
    assert out["pids"] == [0, 1, 3]
