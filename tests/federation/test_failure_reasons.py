"""Failure reasons reach the researcher whole: never clipped mid-sentence, cut only with a note."""

from __future__ import annotations

import pytest
from flwr.app import Error

from federation.errors import MAX_REASON, bounded_reason
from federation.secagg import SecureAggregationHalted, _node_error
from federation.secure_sum import require_nodes

NODE_MESSAGE = (
    "births.csv: 2 problems: row 9 (line 10), column bmi_pre: value 'NaN' is not a number; "
    "row 12 (line 13), column maternal_age: value 99 is outside 13..55"
)


def _flower_failure(message: str, exc_name: str = "DataValidationError") -> Exception:
    """A node's failure as the server's grid hands it over (Flower's own framing)."""
    inner = f"\nException {exc_name} occurred. Message: {message}"
    reason = str(type(RuntimeError())) + ":<'" + inner + "'>"  # flwr run_clientapp's format
    return RuntimeError(Error(code=0, reason=reason))


def test_node_error_keeps_the_whole_message_quotes_included() -> None:
    assert _node_error(_flower_failure(NODE_MESSAGE)) == NODE_MESSAGE
    ray = RuntimeError(
        'ray::ClientAppActor.run() (pid=1)\n  File "x.py", line 3, in run\n'
        f"flwr.clientapp.ClientAppException: \nException ValueError occurred. Message: "
        f"{NODE_MESSAGE}\n"
    )
    assert _node_error(ray) == NODE_MESSAGE
    assert _node_error(RuntimeError("plain failure: node n1 lost")) == "plain failure: node n1 lost"


def test_halted_round_reason_holds_every_cause_whole() -> None:
    causes = [NODE_MESSAGE, "array 0 has |value| 12 above the clipping range 8"]
    text = str(SecureAggregationHalted("collect masked vectors", 1, 3, causes))
    assert text.endswith(f"({causes[1]}; {NODE_MESSAGE})")
    with pytest.raises(RuntimeError) as info:
        require_nodes(2, 1, [NODE_MESSAGE, causes[1]], 2)
    assert str(info.value).endswith(f"({NODE_MESSAGE}; {causes[1]})")


def test_bounded_reason_cuts_only_at_a_clause_and_says_so() -> None:
    assert bounded_reason(f"  {NODE_MESSAGE} ") == NODE_MESSAGE
    clauses = [
        f"row {i} (line {i + 1}), column bmi_pre: value 99 is outside 12..50" for i in range(1, 200)
    ]
    long = "births.csv: 199 problems: " + "; ".join(clauses)
    cut = bounded_reason(long)
    assert len(long) > MAX_REASON >= len(cut)
    kept, note = cut.split(" … ")
    assert long.startswith(kept) and kept.endswith("12..50")  # a whole clause
    assert note == f"[{len(long) - len(kept)} more characters cut]"
    words = bounded_reason("x" * 30 + " " + "y" * 200, 100)
    assert words == "x" * 30 + " … [201 more characters cut]"
    with pytest.raises(ValueError, match="limit"):
        bounded_reason("z" * 100, 30)


def test_a_run_failing_on_node_data_reports_every_problem(tmp_path) -> None:
    import threading

    from federation.spec import parse_job_spec
    from hamanasu.local_runner import EmbeddedRunner, LocalNode

    header = "subject,maternal_age,bmi_pre,lbw"
    rows = [f"{i:032x},{20 + i % 20},{99 if i % 7 == 0 else 22.5},{i % 2}" for i in range(60)]
    rows += [f"{i:032x},{'old' if i % 5 == 0 else 30},22,0" for i in range(100, 160)]
    node = tmp_path / "n1.csv"
    node.write_text("\n".join([header, *rows]) + "\n")
    spec = parse_job_spec(
        {
            "kind": "train",
            "features": ["maternal_age", "bmi_pre"],
            "label": "lbw",
            "privacy": {"epsilon": 1.0},
        }
    )
    runner = EmbeddedRunner({"n1": LocalNode("n1", node, tmp_path / "state")})
    result = runner.run(spec, "j1", ["n1"], lambda _: None, threading.Event())
    assert result.status == "failed"
    assert result.reason == (
        "node data: n1.csv: 2 problems: "
        "row 1 (line 2), column bmi_pre: value 99 is outside 12..50 (and 8 more rows in this column); "
        "row 61 (line 62), column maternal_age: value 'old' is not a number "
        "(and 11 more rows in this column)"
    )
