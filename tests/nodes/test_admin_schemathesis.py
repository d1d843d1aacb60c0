"""Schemathesis over the node admin API's OpenAPI schema (bounded examples, valid and invalid
input): no 5xx.

The node service is linked to a real in-process coordinator with jobs waiting for the node,
so the waiting-jobs view evaluates real specs against the policy and the consents; every
operation is called with the node admin's token.
"""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

EXAMPLES_PER_OPERATION = 25


def test_fuzz_node_admin_api_no_5xx(admin_world) -> None:
    w = admin_world
    waiting = [w.submit(1.0), w.submit(2.0, name="second")]
    assert w.service.poll_once() == dict.fromkeys(waiting, "needs_approval")
    schema = schemathesis.openapi.from_asgi("/openapi.json", w.admin_app)
    operations = [r.ok() for r in schema.get_all_operations()]
    paths = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"GET /jobs/waiting", "POST /jobs/{job_id}/reject", "GET /ledger/verify"} <= paths
    assert not any(p.startswith(("GET /console", "POST /console")) for p in paths)
    failures: list[str] = []
    statuses: Counter[int] = Counter()

    for op in operations:
        modes = st.one_of(
            op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=modes)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def one(case) -> None:
            response = case.call(headers=w.h())
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} "
                    f"{response.text[:200]}"
                )

        one()
    assert sum(statuses.values()) >= len(operations) * 5
    # real answers, not only refusals: reads succeed, bad input and unknown jobs are 4xx
    assert statuses[200] >= 10 and statuses[422] >= 1 and statuses[404] >= 1, statuses
    assert not failures, "\n".join(failures[:10])
    # the jobs fuzzing could not guess are still waiting, untouched
    assert {w.approval(j).status for j in waiting} == {"needs_approval"}
