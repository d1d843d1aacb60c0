"""node audit: mirrored ledgers, their checks, consent summaries and budgets

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    op.create_table(
        "node_ledger_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("tree_size", sa.Integer(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("head_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("head", sa.Text(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("first_checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["node"], ["nodes.name"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("node_ledger_checks", schema=None) as batch_op:
        batch_op.create_index("ix_node_ledger_checks_node_id", ["node", "id"], unique=False)

    op.create_table(
        "node_audit_state",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("verified_size", sa.Integer(), nullable=False),
        sa.Column("head_check_id", sa.Integer(), nullable=True),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent", sa.JSON(), nullable=True),
        sa.Column("budget", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["head_check_id"], ["node_ledger_checks.id"]),
        sa.ForeignKeyConstraint(["node"], ["nodes.name"]),
        sa.PrimaryKeyConstraint("node"),
    )

    op.create_table(
        "node_ledger_entries",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("leaf", sa.LargeBinary(length=32), nullable=False),
        sa.ForeignKeyConstraint(["node"], ["nodes.name"]),
        sa.PrimaryKeyConstraint("node", "idx"),
    )
    with op.batch_alter_table("node_ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_node_ledger_entries_at", ["node", "at"], unique=False)
        batch_op.create_index("ix_node_ledger_entries_kind", ["node", "kind", "idx"], unique=False)

    op.create_table(
        "node_ledger_tree",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pos", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.ForeignKeyConstraint(["node"], ["nodes.name"]),
        sa.PrimaryKeyConstraint("node", "level", "pos"),
    )


def downgrade() -> None:
    """Revert the revision."""
    op.drop_table("node_ledger_tree")
    with op.batch_alter_table("node_ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_node_ledger_entries_kind")
        batch_op.drop_index("ix_node_ledger_entries_at")
    op.drop_table("node_ledger_entries")
    op.drop_table("node_audit_state")
    with op.batch_alter_table("node_ledger_checks", schema=None) as batch_op:
        batch_op.drop_index("ix_node_ledger_checks_node_id")
    op.drop_table("node_ledger_checks")
