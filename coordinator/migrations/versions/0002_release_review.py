"""release review: held results, per-node reviews and reviewers' decisions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("release_review", sa.String(length=16), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("held", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_hash", sa.String(length=64), nullable=True))

    op.create_table(
        "release_reviews",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
        ),
        sa.ForeignKeyConstraint(
            ["node"],
            ["nodes.name"],
        ),
        sa.PrimaryKeyConstraint("job_id", "node"),
    )
    with op.batch_alter_table("release_reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_release_reviews_node"), ["node"], unique=False)

    op.create_table(
        "release_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("reviewer_id", sa.String(length=32), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("result_hash", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
        ),
        sa.ForeignKeyConstraint(
            ["node"],
            ["nodes.name"],
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["principals.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "node", "reviewer_id", name="uq_release_decisions_reviewer"),
    )
    with op.batch_alter_table("release_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_release_decisions_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    """Revert the revision."""
    with op.batch_alter_table("release_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_release_decisions_job_id"))
    op.drop_table("release_decisions")
    with op.batch_alter_table("release_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_release_reviews_node"))
    op.drop_table("release_reviews")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("result_hash")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("held")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("release_review")
