"""After a fault: the coordinator's jobs and approvals, the nodes' budgets and ledgers agree.

:func:`assert_books_agree` is an assertion, run after every multi-host fault:

* every job has ended (succeeded, failed or cancelled) and names a reason when it failed;
* every node a DP job ran on holds a reservation for it, and once the job has ended that
  reservation is no longer active (its service released what was not used);
* a succeeded job's ε per node is what the node's budget says it used (a node that
  missed rounds: for the rounds it took part in) and what the auditor's view says;
* no round of any job was charged twice on a node;
* every node's ledger verifies against its own key, and the coordinator's mirror of it
  verified the latest head the node published, with no node flagged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from consent.signing import load_private_key
from consent.verify import verify_ledger
from nodes.enforcement import EnforcementPoint

ENDED = {"succeeded", "failed", "cancelled"}


def until(
    pred: Callable[[], Any], timeout: float, what: str | Callable[[], str], poll: float = 0.5
) -> Any:
    """Return ``pred()``'s first truthy value, polling up to ``timeout`` seconds.

    ``what`` names what is waited for; a callable is asked at the timeout (so the
    message can show the last state seen).

    Raises:
        AssertionError: it stayed falsy (names ``what``).
    """
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() >= end:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        time.sleep(poll)


def _audit_nodes(c: Any) -> list[dict[str, Any]]:
    token = c.tokens["auditor"].read_text().strip()
    got = httpx.get(
        f"{c.url}/audit/nodes",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(c.pki.ca_cert),
        timeout=30,
    )
    got.raise_for_status()
    out: list[dict[str, Any]] = got.json()
    return out


def assert_books_agree(c: Any, release_timeout: float = 150.0) -> None:
    """Assert the consortium's books agree (see the module docstring)."""
    researcher, auditor = c.client("researcher"), c.client("auditor")
    jobs = researcher.jobs()
    for job in jobs:
        assert job.state in ENDED, (job.id, job.state)
        if job.state == "failed":
            assert job.reason.strip(), job.id
    for name, (_, state) in c.nodes.items():
        point = EnforcementPoint(name, state)
        for job in jobs:
            approved = any(a.node == name and a.status == "approved" for a in job.approvals)
            res = point.budget().reservation(job.id)
            if res is None:
                continue
            assert approved, f"{name} holds a reservation for {job.id} it never approved"
            until(
                lambda p=point, j=job.id: p.budget().reservation(j).status != "active",
                release_timeout,
                f"{name} to release {job.id}",
            )
            rounds = [ch.round for ch in point.budget().charges(job.id)]
            assert len(rounds) == len(set(rounds)), f"{name}: a round of {job.id} charged twice"
    audit = {e.node: e.by_job for e in auditor.epsilon_by_node()}
    for job in jobs:
        if job.state != "succeeded" or not job.has_result:
            continue
        result = researcher.result(job.id)
        for name, spent in result.epsilon_by_node.items():
            used = EnforcementPoint(name, c.nodes[name][1]).budget().reservation(job.id)
            assert used is not None, (name, job.id)
            # what the node's budget charged, for the rounds it took part in (a node that
            # missed rounds spent, and states, less than the job's composed ε)
            assert used.used_epsilon == pytest.approx(spent), (name, job.id)
            assert audit.get(name, {}).get(job.id) == pytest.approx(spent), (name, job.id)
    for name, (_, state) in c.nodes.items():
        point = EnforcementPoint(name, state)
        key = load_private_key(point.state.key_path).public_key()
        verify_ledger(point.state.ledger_path, key)  # raises when anything does not hold
    for status in _audit_nodes(c):
        assert not status["flagged"], status
        check = status["last_check"]
        assert check is None or check["result"] == "verified", check
