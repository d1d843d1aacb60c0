"""organisations: each researcher's registered organisation, its type and projects

The coordinator fills a job's requester identity (``purpose.requester``,
``requester_type``, ``commercial``) from the organisation the operator registered for the
submitting researcher. Researchers registered before this revision have none: they
cannot submit until the operator gives them one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    op.create_table(
        "organisations",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("projects", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    if op.get_bind().dialect.name == "sqlite":
        # SQLite takes a REFERENCES clause in ADD COLUMN, not a constraint added later;
        # recreating the principals table (batch mode) would trip the keys pointing at it.
        op.execute(
            "ALTER TABLE principals ADD COLUMN organisation VARCHAR(128) "
            "REFERENCES organisations (name)"
        )
    else:
        op.add_column("principals", sa.Column("organisation", sa.String(length=128)))
        op.create_foreign_key(
            "fk_principals_organisation", "principals", "organisations", ["organisation"], ["name"]
        )


def downgrade() -> None:
    """Revert the revision."""
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.drop_column("organisation")
    op.drop_table("organisations")
