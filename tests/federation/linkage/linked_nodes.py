"""Local holders for linked-job tests: a node state, its policy, its residents' consents."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hamanasu.local_runner import LocalNode
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint

CONSENT_HEADER = (
    "subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end"
)


def make_node(tmp: Path, name: str, frame: pd.DataFrame, policy: str,
              refused: frozenset[str] = frozenset()) -> LocalNode:
    """Return a local node holding ``frame``; every resident consents except ``refused``."""
    path = tmp / f"{name}-policy.toml"
    path.write_text(policy)
    state = tmp / f"{name}-state"
    init_node(state, name, path)
    lines = [CONSENT_HEADER]
    for s in frame["subject"]:
        decision = "deny" if s in refused else "permit"
        lines.append(f"{s},2025-01-01T00:00:00+00:00,active,{decision},HMB,no,,,")
    consents = tmp / f"{name}-consents.csv"
    consents.write_text("\n".join(lines) + "\n")
    import_consents(EnforcementPoint(name, state), consents)
    data = tmp / f"{name}.csv"
    frame.to_csv(data, index=False)
    return LocalNode(name, data, state)


def usage_entries(node: LocalNode) -> list[dict]:
    """Return the payloads of the node's ``job.usage`` ledger entries."""
    point = EnforcementPoint(node.name, node.state_dir)
    return [e.payload for e in point.ledger().entries(kind="job.usage")]
