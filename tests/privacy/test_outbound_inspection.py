"""Outbound inspection: everything a node sends during the demo job, checked.

Two full runs of the demo's LBW training job (``hamanasu.training_run.run_training_job``,
the scenario's two maternity nodes, 1 training round + the final evaluation round):

* the real job, behind each node's enforcement point (policy, consent, budget, ledger),
  with DP-SGD and SecAgg+: every reply the server receives through the grid and every
  reply as it leaves each node is recorded and :func:`outbound_harness.inspect_outbound`
  finds nothing;
* a deliberately leaky client (SecAgg+ off, and a mod on one node that slips pseudonyms
  and raw column values into its replies): the same harness flags each leak, per node.

The harness itself is also checked on hand-made messages, kind by kind.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbound_harness import (  # noqa: E402
    ALLOWED_CLEAR,
    NodeSecrets,
    OutboundItem,
    body_items,
    inspect_outbound,
    load_recorded,
    recording_mod,
    recording_server_app,
    with_mods,
)

ROOT = Path(__file__).resolve().parents[2]
MATERNITY = ("city-hospital", "women-clinic")


# -- the harness on hand-made items ------------------------------------------------------------


def _item(path, value, sender="0"):
    return OutboundItem("server", sender, "train", path, value)


@pytest.fixture(scope="module")
def toy_secrets():
    rng = np.random.default_rng(1)
    return [
        NodeSecrets(
            name="a",
            columns={
                "bmi_pre": np.round(rng.normal(21, 3, 300), 1),
                "smoking": rng.integers(0, 2, 300).astype(float),
            },
            pseudonyms=frozenset({"74206344fa167506e7dbe9d093159b73"}),
            updates=[rng.normal(size=10)],
        )
    ]


def test_harness_passes_allowed_metrics_and_masked_vectors(toy_secrets):
    rng = np.random.default_rng(2)
    items = [
        _item("config_records/fitres.metrics/node", "a"),
        _item("config_records/fitres.metrics/epsilon", 1.23),
        _item("metric_records/fitres.num_examples/num_examples", 300),
        _item(
            "config_records/secaggplus_configs/masked_params[1]",
            rng.integers(0, 2**32, 200, dtype=np.uint64),
        ),
        _item("config_records/secaggplus_configs/pk1", rng.bytes(64)),
    ]
    assert inspect_outbound(items, toy_secrets) == []


def test_harness_flags_each_kind_of_leak(toy_secrets):
    s = toy_secrets[0]
    bmi = s.columns["bmi_pre"]
    pseudo = next(iter(s.pseudonyms))
    update = s.updates[0]
    cases = {
        "pseudonym": _item("error/reason", f"subject {pseudo} has no consent"),
        "record_values": _item(
            "array_records/fitres.parameters/0", np.concatenate([[0.3], bmi[40:60]])
        ),
        "clear_update": _item(
            "array_records/fitres.parameters/0", np.concatenate([[9.0], update, [1.0]])
        ),
        "unlisted_clear_value": _item("config_records/fitres.metrics/debug", 1.0),
        "not_masked": _item("config_records/secaggplus_configs/masked_params[1]", np.arange(100)),
        "unmasked_array": _item("array_records/fitres.parameters/1", np.ones(3)),
    }
    for kind, it in cases.items():
        found = {f.kind for f in inspect_outbound([it], toy_secrets)}
        assert kind in found, (kind, found)
    # Raw pseudonym bytes, hex in bytes, and a long run of a 0/1 column are found too.
    raw = _item("config_records/secaggplus_configs/ctxts[0]", b"xx" + bytes.fromhex(pseudo) + b"yy")
    hexb = _item("config_records/secaggplus_configs/ctxts[0]", b"id=" + pseudo.upper().encode())
    flags = _item("array_records/x/0", s.columns["smoking"][:60])
    assert [f.kind for f in inspect_outbound([raw], toy_secrets)] == ["pseudonym"]
    assert [f.kind for f in inspect_outbound([hexb], toy_secrets)] == ["pseudonym"]
    assert "record_values" in {f.kind for f in inspect_outbound([flags], toy_secrets)}
    # ... but a short run, a run of zeros, or other numbers are not.
    quiet = [
        _item(
            "config_records/secaggplus_configs/masked_params[0]",
            np.concatenate([bmi[:5], [2.0**31] * 20]),
        ),
        _item(
            "config_records/secaggplus_configs/masked_params[1]",
            np.concatenate([np.zeros(100), [2.0**31]]),
        ),
        _item(
            "config_records/secaggplus_configs/masked_params[2]",
            np.random.default_rng(3).normal(size=500) + 2.0**31,
        ),
    ]
    assert inspect_outbound(quiet, toy_secrets) == []


def test_harness_reads_http_bodies(toy_secrets):
    pseudo = next(iter(toy_secrets[0].pseudonyms))
    bmi = toy_secrets[0].columns["bmi_pre"]
    leaky = body_items(
        f'{{"subjects": ["{pseudo}"], "x": {json.dumps(bmi[:30].tolist())}}}',
        "http",
        "a",
        "POST /jobs",
    )
    kinds = {f.kind for f in inspect_outbound(leaky, toy_secrets, expect_secure_aggregation=False)}
    assert {"pseudonym", "record_values"} <= kinds
    clean = body_items('{"job_id": "j1", "epsilon": 3.0}', "http", "a", "POST /jobs")
    assert inspect_outbound(clean, toy_secrets, expect_secure_aggregation=False) == []


# -- the demo job, recorded end to end ---------------------------------------------------------


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from federation.spec import parse_job_spec
    from nodes.scenario import generate

    out = tmp_path_factory.mktemp("outbound")
    generate("iwamizawa", out / "data", seed=2017, years=[2019, 2020])
    data = tomllib.loads((ROOT / "examples" / "iwamizawa" / "lbw_model.toml").read_text())
    data["rounds"] = 1
    return out, data, parse_job_spec


def _secrets(out: Path, spec, plain_items) -> list[NodeSecrets]:
    """Each node's record-level columns (raw and scaled), pseudonyms and plain arrays."""
    from federation.plans.train import prepare_features, public_scaling
    from nodes.sources import read_columns

    secrets = []
    for i, name in enumerate(MATERNITY):
        births = pd.read_csv(out / "data" / name / "births.csv")
        consents = pd.read_csv(out / "data" / name / "consents.csv")
        frame = read_columns(out / "data" / name, spec.domain, [*spec.features, spec.label])
        scaled = prepare_features(frame, spec.features, public_scaling(spec))
        columns = {
            c: births[c].to_numpy(dtype=float) for c in births.select_dtypes("number").columns
        }
        columns |= {f"scaled:{f}": scaled[:, j] for j, f in enumerate(spec.features)}
        pseudonyms = (
            frozenset(births["subject"])
            | frozenset(births["infant"])
            | frozenset(consents["subject"])
        )
        updates = [
            it.value
            for it in plain_items
            if it.sender in (name, str(i))
            and isinstance(it.value, np.ndarray)
            and it.path.startswith("array_records/")
        ]
        secrets.append(NodeSecrets(name, columns, pseudonyms, updates))
    return secrets


def _run(monkeypatch, out: Path, spec, *, gates, before=(), tag: str):
    """Run the job through run_training_job with every outgoing reply recorded."""
    import hamanasu.training_run as tr

    node_out, node_plain = out / f"{tag}-node-out", out / f"{tag}-node-plain"
    server_items: list[OutboundItem] = []
    real_build, real_run = tr.build_training_client_app, tr.run_embedded

    def build(*args, **kwargs):
        return with_mods(
            real_build,
            *args,
            **kwargs,
            before=[recording_mod(node_out, "node-out"), *before],
            after=[recording_mod(node_plain, "node-plain", drop_received=True)],
        )

    def run(server_app, client_app, n):
        return real_run(recording_server_app(server_app, server_items), client_app, n)

    monkeypatch.setattr(tr, "build_training_client_app", build)
    monkeypatch.setattr(tr, "run_embedded", run)
    from nodes.sources import NodeSource

    nodes = [NodeSource(n, out / "data" / n, out / "nodes" / n) for n in MATERNITY]
    run_ = tr.run_training_job(spec, nodes, job_id=f"outbound-{tag}", max_records=2000, gates=gates)
    return run_, server_items, load_recorded(node_out), load_recorded(node_plain)


@pytest.mark.slow
def test_demo_job_sends_nothing_in_the_clear(scenario, monkeypatch):
    from nodes.cli import import_consents, init_node
    from nodes.enforcement import EnforcementPoint

    out, data, parse = scenario
    spec = parse(data)
    gates = {}
    for name in MATERNITY:
        folder = out / "nodes" / name
        init_node(folder, name, ROOT / "examples" / "iwamizawa" / "policies" / f"{name}.toml")
        point = EnforcementPoint(name, folder)
        import_consents(point, out / "data" / name / "consents.csv")
        point.accept(spec, "outbound-clean")
        gates[name] = point
    run, server_items, node_items, plain_items = _run(
        monkeypatch, out, spec, gates=gates, tag="clean"
    )
    assert run.outcome.status == "succeeded", run.outcome.reason
    assert run.outcome.secure_aggregation is True
    secrets = _secrets(out, spec, plain_items)

    # The harness saw the traffic: 2 nodes x 2 rounds x 4 SecAgg+ stages at the server ...
    assert len({(it.sender, it.message_type) for it in server_items}) >= 2
    masked = [
        it
        for it in server_items
        if it.key == "config_records/secaggplus_configs/masked_params"
        and isinstance(it.value, np.ndarray)
    ]
    seen = sorted(
        {
            (it.source, it.key, type(it.value).__name__)
            for it in [*server_items, *node_items, *plain_items]
        }
    )
    assert len({it.sender for it in masked}) == 2 and len(masked) >= 2 * 2 * 2, seen
    # ... and each node's own plain arrays (parameters, evaluation vector) before masking.
    for s in secrets:
        assert len(s.updates) >= 3, s.name
        assert len(s.pseudonyms) > 300 and len(s.columns) > 15
    findings = inspect_outbound([*server_items, *node_items], secrets)
    assert findings == [], findings[:5]
    # What the node did send in the clear is only the allow-listed metadata.
    sent_keys = {
        it.key for it in server_items if it.key.startswith(("config_records/", "metric_records/"))
    }
    assert sent_keys <= ALLOWED_CLEAR
    assert {
        "config_records/fitres.metrics/node",
        "config_records/fitres.metrics/epsilon",
        "metric_records/fitres.num_examples/num_examples",
    } <= sent_keys


@pytest.mark.slow
def test_leaky_client_is_caught(scenario, monkeypatch):
    out, data, parse = scenario
    spec = parse({**data, "secure_aggregation": {"enabled": False}})
    leak_dir = out / "data" / MATERNITY[1]

    def leaky_mod(message, context, call_next):
        """Slip a few pseudonyms and a run of raw BMI values into every reply of node 1."""
        import pandas as pd
        from flwr.app import ConfigRecord

        reply = call_next(message, context)
        if str(context.node_config.get("partition-id")) == "1" and reply.has_content():
            births = pd.read_csv(leak_dir / "births.csv")
            reply.content.config_records["debug"] = ConfigRecord(
                {
                    "subjects": [str(s) for s in births["subject"][:3]],
                    "bmi": [float(v) for v in births["bmi_pre"][:40]],
                }
            )
        return reply

    run, server_items, node_items, plain_items = _run(
        monkeypatch, out, spec, gates=None, before=[leaky_mod], tag="leaky"
    )
    assert run.outcome.status == "succeeded", run.outcome.reason
    secrets = _secrets(out, spec, plain_items)
    findings = inspect_outbound([*server_items, *node_items], secrets)
    by_kind: dict[str, set[str]] = {}
    for f in findings:
        by_kind.setdefault(f.kind, set()).add(f.node)
    # Plain updates of both nodes (no SecAgg+), and node 1's pseudonyms and BMI values.
    assert by_kind.get("clear_update") == set(MATERNITY), by_kind
    assert by_kind.get("pseudonym") == {MATERNITY[1]}, by_kind
    assert MATERNITY[1] in by_kind.get("record_values", set()), by_kind
    assert "unmasked_array" in by_kind and "unlisted_clear_value" in by_kind
    # They reached the server, not just the node's outbox.
    assert {f.source for f in findings if f.kind == "pseudonym"} >= {"server", "node-out"}
