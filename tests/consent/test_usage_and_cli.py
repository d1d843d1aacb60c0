from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from consent.cli import app
from consent.errors import ConsentError, UsageAuditError
from consent.ledger import Ledger, subject_commitment
from consent.registry import ConsentRegistry
from consent.signing import generate_key
from consent.usage import Disclosure, audit_usage

from .conftest import VECTORS, Clock, tamper, usage_payload

SALT = bytes(range(100, 132))
USED_AT = datetime(2024, 3, 1, tzinfo=UTC)
# permitted for HMB in births on 2024-03-01 (see consents.csv)
GOOD = ["0a1b2c3d", "2c3d4e5f", "3d4e5f60"]

runner = CliRunner()


@pytest.fixture
def node(tmp_path: Path, node_key: Ed25519PrivateKey) -> dict[str, Path]:
    key_path = tmp_path / "node.key"
    generate_key(key_path, private_key=node_key)
    ledger_path, registry_path = tmp_path / "ledger.db", tmp_path / "consents.db"
    with Ledger(ledger_path, node_key, clock=Clock()) as ledger:
        with ConsentRegistry(registry_path, ledger=ledger) as registry:
            registry.import_csv(VECTORS / "consents.csv")
        for rnd, subjects in ((1, GOOD), (2, GOOD[:2])):
            ledger.append(
                "job.usage",
                usage_payload(
                    rnd=rnd,
                    n_subjects=len(subjects),
                    subject_commitment=subject_commitment(subjects, SALT),
                ),
                at=USED_AT,
            )
    disclosure = tmp_path / "disclosure.json"
    disclosure.write_text(
        json.dumps({"job_id": "job-1", "salt": SALT.hex(), "rounds": {"1": GOOD, "2": GOOD[:2]}})
    )
    return {
        "key": key_path,
        "pub": tmp_path / "node.key.pub",
        "ledger": ledger_path,
        "consents": registry_path,
        "disclosure": disclosure,
        "dir": tmp_path,
    }


def test_usage_audit_passes_for_an_honest_node(node: dict[str, Path]) -> None:
    disclosure = Disclosure.model_validate_json(node["disclosure"].read_text())
    with ConsentRegistry(node["consents"]) as registry:
        report = audit_usage(node["ledger"], "job-1", disclosure, registry)
    assert report.ok and [r.round for r in report.rounds] == [1, 2]
    assert all(r.commitment_ok and not r.not_permitted for r in report.rounds)


def test_usage_audit_catches_wrong_lists_and_missing_consent(node: dict[str, Path]) -> None:
    with ConsentRegistry(node["consents"]) as registry:
        # a subject swapped for one without consent: commitment and consent both fail
        swapped = Disclosure(
            job_id="job-1", salt=SALT.hex(), rounds={1: [*GOOD[:2], "1b2c3d4e"], 2: GOOD[:2]}
        )
        with pytest.raises(UsageAuditError) as info:
            audit_usage(node["ledger"], "job-1", swapped, registry)
        bad = info.value.report.rounds[0]  # type: ignore[union-attr]
        assert not bad.commitment_ok and bad.not_permitted == ["1b2c3d4e"]
        # wrong salt
        salted = Disclosure(job_id="job-1", salt="00" * 16, rounds={1: GOOD, 2: GOOD[:2]})
        with pytest.raises(UsageAuditError, match="commitment"):
            audit_usage(node["ledger"], "job-1", salted, registry)
        # a round missing, and a round that was never logged
        partial = Disclosure(job_id="job-1", salt=SALT.hex(), rounds={1: GOOD, 3: GOOD})
        with pytest.raises(UsageAuditError) as info:
            audit_usage(node["ledger"], "job-1", partial, registry)
        problems = [p for r in info.value.report.rounds for p in r.problems]  # type: ignore[union-attr]
        assert (
            "round not disclosed" in problems
            and "round disclosed but not in the ledger" in problems
        )
        with pytest.raises(ConsentError, match="no usage"):
            audit_usage(
                node["ledger"],
                "job-2",
                Disclosure(job_id="job-2", salt=SALT.hex(), rounds={1: GOOD}),
                registry,
            )


def test_usage_audit_catches_use_after_withdrawal(
    tmp_path: Path, node: dict[str, Path], node_key: Ed25519PrivateKey
) -> None:
    later = datetime(2024, 7, 1, tzinfo=UTC)  # 0a1b2c3d withdrew on 2024-06-01
    with Ledger(node["ledger"], node_key) as ledger:
        ledger.append(
            "job.usage",
            usage_payload(
                job="job-9", rnd=1, n_subjects=3, subject_commitment=subject_commitment(GOOD, SALT)
            ),
            at=later,
        )
    with ConsentRegistry(node["consents"]) as registry, pytest.raises(UsageAuditError) as info:
        audit_usage(
            node["ledger"],
            "job-9",
            Disclosure(job_id="job-9", salt=SALT.hex(), rounds={1: GOOD}),
            registry,
        )
    assert info.value.report.rounds[0].not_permitted == ["0a1b2c3d"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "command", [[], ["verify"], ["head"], ["usage"], ["keygen"], ["proof"], ["import-consents"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_cli_verify_table_json_and_failure(node: dict[str, Path]) -> None:
    ok = runner.invoke(app, ["verify", str(node["ledger"]), "--key", str(node["pub"])])
    assert ok.exit_code == 0 and "Ledger verified" in ok.output
    js = runner.invoke(
        app, ["verify", str(node["ledger"]), "--key", str(node["pub"]), "--format", "json"]
    )
    data = json.loads(js.stdout)
    assert js.exit_code == 0 and data["ok"] and data["tree_size"] == 7
    tamper(node["ledger"])("DELETE FROM entries WHERE idx = 3")
    bad = runner.invoke(
        app, ["verify", str(node["ledger"]), "--key", str(node["pub"]), "--format", "json"]
    )
    assert bad.exit_code == 1 and json.loads(bad.stdout)["first_bad_index"] == 3
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith(
        "error: ledger verification failed: entry 3"
    )


def test_cli_head_then_verify_since(node: dict[str, Path]) -> None:
    out = node["dir"] / "head.json"
    result = runner.invoke(
        app, ["head", str(node["ledger"]), "--key", str(node["dir"]), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["tree_size"] == 7
    latest = node["dir"] / "latest.json"
    assert runner.invoke(app, ["head", str(node["ledger"]), "--out", str(latest)]).exit_code == 0
    ok = runner.invoke(
        app, ["verify", str(node["ledger"]), "--key", str(node["pub"]), "--since", str(out)]
    )
    assert ok.exit_code == 0, ok.output
    (node["dir"] / "junk.json").write_text("{}")
    bad = runner.invoke(
        app,
        [
            "verify",
            str(node["ledger"]),
            "--key",
            str(node["pub"]),
            "--since",
            str(node["dir"] / "junk.json"),
        ],
    )
    assert bad.exit_code == 2 and bad.stderr.startswith("error: head file")


def test_cli_usage(node: dict[str, Path]) -> None:
    args = [
        "usage",
        str(node["ledger"]),
        "--job",
        "job-1",
        "--disclosure",
        str(node["disclosure"]),
        "--consents",
        str(node["consents"]),
        "--key",
        str(node["pub"]),
    ]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0 and "OK" in ok.output
    js = runner.invoke(app, [*args, "--format", "json"])
    assert json.loads(js.stdout)["ok"] is True
    node["disclosure"].write_text(
        json.dumps(
            {"job_id": "job-1", "salt": SALT.hex(), "rounds": {"1": GOOD[:1], "2": GOOD[:2]}}
        )
    )
    failed = runner.invoke(app, [*args, "--format", "json"])
    assert failed.exit_code == 1 and json.loads(failed.stdout)["ok"] is False
    other = runner.invoke(app, [*args[:2], "--job", "job-2", *args[4:]])
    assert other.exit_code == 2 and "not 'job-2'" in other.stderr


def test_cli_bad_input_is_one_line_and_exit_2(node: dict[str, Path]) -> None:
    missing = runner.invoke(
        app, ["verify", str(node["dir"] / "nope.db"), "--key", str(node["pub"])]
    )
    assert (
        missing.exit_code == 2
        and missing.stderr == f"error: ledger {node['dir'] / 'nope.db'} does not exist\n"
    )
    badkey = runner.invoke(app, ["verify", str(node["ledger"]), "--key", str(node["disclosure"])])
    assert (
        badkey.exit_code == 2
        and badkey.stderr.startswith("error: ")
        and badkey.stderr.count("\n") == 1
    )
    exists = runner.invoke(app, ["keygen", str(node["key"])])
    assert exists.exit_code == 2 and "refusing to overwrite" in exists.stderr
    badcsv = runner.invoke(
        app,
        ["import-consents", str(VECTORS / "bad_consents.csv"), "--consents", str(node["consents"])],
    )
    assert (
        badcsv.exit_code == 2 and "nothing imported" in badcsv.stderr and "line 4" in badcsv.stdout
    )


def test_cli_keygen_proof_and_import(tmp_path: Path) -> None:
    key = tmp_path / "k" / "ledger.key"
    key.parent.mkdir()
    made = runner.invoke(app, ["keygen", str(key), "--format", "json"])
    assert made.exit_code == 0 and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert "PRIVATE" not in made.output
    imported = runner.invoke(
        app,
        [
            "import-consents",
            str(VECTORS / "fhir" / "withdrawn.json"),
            "--consents",
            str(tmp_path / "c.db"),
            "--ledger",
            str(tmp_path / "l.db"),
            "--key",
            str(key.parent),
            "--format",
            "json",
        ],
    )
    assert imported.exit_code == 0 and json.loads(imported.stdout)["imported"] == 2
    proof = runner.invoke(
        app,
        [
            "proof",
            str(tmp_path / "l.db"),
            "--index",
            "1",
            "--key",
            f"{key}.pub",
            "--format",
            "json",
        ],
    )
    assert proof.exit_code == 0 and json.loads(proof.stdout)["entry"]["kind"] == "consent.withdrawn"
    out_of_range = runner.invoke(
        app, ["proof", str(tmp_path / "l.db"), "--index", "5", "--key", f"{key}.pub"]
    )
    assert out_of_range.exit_code == 2


def test_hamanasu_audit_is_mounted(node: dict[str, Path]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hamanasu",
            "audit",
            "verify",
            str(node["ledger"]),
            "--key",
            str(node["pub"]),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
