"""supernode keys: each node's registered SuperNode public key, kept by the coordinator

The SuperLink keeps its state in memory, so the coordinator is where the registrations
live; it registers them again whenever it starts its SuperLink.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("supernode_key", sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert the revision."""
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("supernode_key")
