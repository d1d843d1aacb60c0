"""The coordinator's tables for nodes' audit snapshots (revision 0003), on the same ``Base``.

* ``node_audit_state``: per node, how many mirrored ledger entries are verified, the check
  that verified the latest head, and the node's latest consent summary and budget.
* ``node_ledger_entries``: the mirrored entries (canonical bytes and leaf hash); those at or
  beyond the node's verified size are staged, waiting for a head that covers them.
* ``node_ledger_tree``: the hash of every complete subtree (level ≥ 1) over verified entries,
  computed here from the leaves, so roots and proofs need O(log n) look-ups.
* ``node_ledger_checks``: every verification of a signed head and its outcome; repeats of one
  outcome for one head are merged (``checks``, ``last_checked_at``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from coordinator.models import Base

__all__ = ["NodeAuditState", "NodeLedgerCheck", "NodeLedgerEntry", "NodeLedgerTree"]


class NodeLedgerCheck(Base):
    """One verification of a node's signed tree head (what it checked, when, the outcome)."""

    __tablename__ = "node_ledger_checks"
    __table_args__ = (Index("ix_node_ledger_checks_node_id", "node", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(64), ForeignKey("nodes.name"))
    tree_size: Mapped[int] = mapped_column(Integer)
    root_hash: Mapped[str] = mapped_column(String(64))
    head_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(64))
    head: Mapped[str] = mapped_column(Text)  # the signed tree head's JSON, as received
    result: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    flagged: Mapped[bool] = mapped_column(Boolean)
    first_checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    checks: Mapped[int] = mapped_column(Integer)


class NodeAuditState(Base):
    """Per node: the verified mirror's size and head, and the latest consent and budget."""

    __tablename__ = "node_audit_state"

    node: Mapped[str] = mapped_column(String(64), ForeignKey("nodes.name"), primary_key=True)
    verified_size: Mapped[int] = mapped_column(Integer)
    head_check_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("node_ledger_checks.id"), nullable=True
    )
    snapshot_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    consent: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    budget: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class NodeLedgerEntry(Base):
    """One mirrored ledger entry of a node, as the node stores it."""

    __tablename__ = "node_ledger_entries"
    __table_args__ = (
        Index("ix_node_ledger_entries_kind", "node", "kind", "idx"),
        Index("ix_node_ledger_entries_at", "node", "at"),
    )

    node: Mapped[str] = mapped_column(String(64), ForeignKey("nodes.name"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    leaf: Mapped[bytes] = mapped_column(LargeBinary(32))


class NodeLedgerTree(Base):
    """The hash of leaves ``[pos * 2**level, (pos + 1) * 2**level)`` of a node's ledger."""

    __tablename__ = "node_ledger_tree"

    node: Mapped[str] = mapped_column(String(64), ForeignKey("nodes.name"), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pos: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
