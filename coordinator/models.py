"""The coordinator's tables (SQLAlchemy 2 typed ORM).

The schema is created and changed only by the Alembic migrations in
``coordinator/migrations``; these classes must stay in step with them (a test compares
the migrated schema with this metadata). Times are stored timezone-aware in UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Approval",
    "Base",
    "Job",
    "JobEvent",
    "Node",
    "Organisation",
    "Principal",
    "ReleaseDecision",
    "ReleaseReview",
    "Result",
    "Token",
]


class Base(DeclarativeBase):
    """Declarative base of the coordinator's tables."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Organisation(Base):
    """A researcher's organisation, its type and its projects (revision 0005)."""

    __tablename__ = "organisations"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    projects: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class Principal(Base):
    """Someone who calls the API: a researcher, a node admin, an auditor or an operator."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    node: Mapped[str | None] = mapped_column(String(64), ForeignKey("nodes.name"), nullable=True)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    organisation: Mapped[str | None] = mapped_column(  # 0005
        String(128), ForeignKey("organisations.name"), nullable=True
    )


class Token(Base):
    """An API token: a public lookup prefix and the keyed hash of the whole token."""

    __tablename__ = "tokens"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(32), ForeignKey("principals.id"), index=True)
    hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Node(Base):
    """A registered node and the caps it publishes (no data)."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    registered_at: Mapped[datetime]
    max_epsilon_per_job: Mapped[float | None] = mapped_column(Float, nullable=True)
    domains: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    approval_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    public_key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)
    release_review: Mapped[str | None] = mapped_column(String(16), nullable=True)  # 0002
    supernode_key: Mapped[str | None] = mapped_column(Text, nullable=True)  # 0004


class Job(Base):
    """A submitted job, its validated spec and where it stands."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_owner_submitted", "owner_id", "submitted_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(32), ForeignKey("principals.id"))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    nodes: Mapped[list[Any]] = mapped_column(JSON)
    run_nodes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    min_nodes: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(24), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    round: Mapped[int] = mapped_column(Integer, default=0)
    rounds_total: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    submitted_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # 0002


class JobEvent(Base):
    """One step of a job's history (append-only)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(Text, default="")
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Approval(Base):
    """One targeted node's approval of one job."""

    __tablename__ = "approvals"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id"), primary_key=True)
    node: Mapped[str] = mapped_column(
        String(64), ForeignKey("nodes.name"), primary_key=True, index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime]


class Result(Base):
    """A finished run's result: report, aggregate model, ε per node, plot."""

    __tablename__ = "results"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    epsilon_by_node: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    plot_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime]
    result_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # 0002


class ReleaseReview(Base):
    """One node's output-checking review of one job's held result (revision 0002)."""

    __tablename__ = "release_reviews"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id"), primary_key=True)
    node: Mapped[str] = mapped_column(
        String(64), ForeignKey("nodes.name"), primary_key=True, index=True
    )
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime]


class ReleaseDecision(Base):
    """One reviewer's decision on a held result (append-only; one per reviewer, job and node)."""

    __tablename__ = "release_decisions"
    __table_args__ = (
        UniqueConstraint("job_id", "node", "reviewer_id", name="uq_release_decisions_reviewer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id"), index=True)
    node: Mapped[str] = mapped_column(String(64), ForeignKey("nodes.name"))
    reviewer_id: Mapped[str] = mapped_column(String(32), ForeignKey("principals.id"))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime]
