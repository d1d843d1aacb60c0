"""API models of the coordinator, layered Base / Create / Public.

A ``*Create`` model is what a caller sends, a ``*Public`` model what the API returns; a
token appears only in :class:`TokenIssued`, the one response that shows it, and a
stored hash never appears in any model. Models shared with the node service
(:class:`federation.api_models.JobPublic`, ...) live in ``federation.api_models``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from federation.api_models import NodeName, NodeRegistration

__all__ = [
    "EpsilonByNode",
    "JobSubmit",
    "NodeCreate",
    "NodePublic",
    "OrganisationCreate",
    "OrganisationMembership",
    "OrganisationPublic",
    "OrganisationType",
    "PrincipalBase",
    "PrincipalCreate",
    "PrincipalCreated",
    "PrincipalPublic",
    "ProjectCreate",
    "ResultPublic",
    "SupernodeKeyCreate",
    "SupernodeKeyPublic",
    "Role",
    "TokenIssued",
    "TokenPublic",
]


class Role(StrEnum):
    """What a principal may do: each route admits some roles (``coordinator.routes.deps``)."""

    RESEARCHER = "researcher"
    NODE_ADMIN = "node_admin"
    #: A node's service (its poller): publishes caps, polls, posts its policy's decisions,
    #: pushes audit snapshots, for its own node only; never acts as a human admin.
    NODE_SERVICE = "node_service"
    AUDITOR = "auditor"
    OPERATOR = "operator"


#: What kind of body an organisation is (the requester types node policies name).
OrganisationType = Literal["academic", "public", "commercial", "clinical"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrincipalBase(_Model):
    """Who a principal is: a unique name, a role, and (node admins) the node they run."""

    name: str = Field(min_length=1, max_length=128, pattern=_NAME)
    role: Role
    node: NodeName | None = None
    organisation: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=_NAME,
        description="A researcher's registered organisation: the requester the "
        "coordinator vouches for on every job they submit.",
    )

    @model_validator(mode="after")
    def _node_for_admins(self) -> PrincipalBase:
        bound = self.role in (Role.NODE_ADMIN, Role.NODE_SERVICE)
        if bound and self.node is None:
            raise ValueError(f"node: a {self.role} must be bound to a node")
        if not bound and self.node is not None:
            raise ValueError("node: only a node_admin or node_service is bound to a node")
        if self.role != "researcher" and self.organisation is not None:
            raise ValueError("organisation: only a researcher belongs to an organisation")
        return self


class PrincipalCreate(PrincipalBase):
    """A principal the operator registers (a token is issued with it)."""


class PrincipalPublic(PrincipalBase):
    """A principal as the API shows it."""

    id: str
    created_at: datetime
    disabled_at: datetime | None = None


class TokenPublic(_Model):
    """A token's public part: its lookup prefix and state (never the token or its hash)."""

    prefix: str
    principal_id: str
    created_at: datetime
    revoked_at: datetime | None = None


class TokenIssued(TokenPublic):
    """A freshly issued token: ``token`` is shown this once and cannot be fetched again."""

    token: str = Field(repr=False, description="The token; shown this once.")


class PrincipalCreated(_Model):
    """A new principal and its first token (shown once)."""

    principal: PrincipalPublic
    token: TokenIssued


class ProjectCreate(_Model):
    """A project an organisation may run jobs for, and whether its use is commercial."""

    name: str = Field(min_length=1, max_length=128, pattern=_NAME)
    commercial: bool = False


class OrganisationCreate(_Model):
    """An organisation the operator registers: its type and the projects it may run.

    Its researchers' jobs carry this identity (``purpose.requester``, ``requester_type``,
    ``commercial``), filled in by the coordinator, never taken from the spec.
    """

    name: str = Field(min_length=1, max_length=128, pattern=_NAME)
    type: OrganisationType
    projects: list[ProjectCreate] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _distinct_projects(self) -> OrganisationCreate:
        names = [p.name for p in self.projects]
        if len(set(names)) != len(names):
            raise ValueError("projects: a project is listed twice")
        return self


class OrganisationMembership(_Model):
    """The organisation a researcher belongs to."""

    organisation: str = Field(min_length=1, max_length=128, pattern=_NAME)


class OrganisationPublic(OrganisationCreate):
    """A registered organisation."""

    created_at: datetime


class NodeCreate(NodeRegistration):
    """A node the operator registers; its caps may be published later by the node itself."""

    name: NodeName


class SupernodeKeyCreate(_Model):
    """A node's SuperNode public key, as ``hamanasu pki node-key`` writes the ``.pub`` file."""

    public_key: str = Field(
        min_length=20,
        max_length=2000,
        pattern=r"^ecdsa-sha2-nistp384 [A-Za-z0-9+/=]+( [^\n]*)?\s*$",
        description="OpenSSH ECDSA P-384 public key.",
    )


class SupernodeKeyPublic(_Model):
    """A SuperNode key the SuperLink accepted: the node and the id the SuperLink gave it."""

    node: str
    flower_node_id: int


class NodePublic(NodeRegistration):
    """A registered node, with when it registered and when its service last polled."""

    name: str
    registered_at: datetime
    last_seen_at: datetime | None = None
    supernode_online: bool | None = Field(
        default=None,
        description="Whether the node's SuperNode is connected to the SuperLink "
        "(None: this coordinator runs no SuperLink, or it cannot be asked).",
    )


class JobSubmit(_Model):
    """A job submission: the job spec as a JSON object (the TOML file's tables)."""

    spec: dict[str, Any] = Field(
        description="The job spec (see federation.spec.JobSpec); validated field by field."
    )


class ResultPublic(_Model):
    """A finished job's result (the plot is served separately as PNG)."""

    job_id: str
    status: str
    report: dict[str, Any]
    model: dict[str, Any] | None = None
    epsilon_by_node: dict[str, float]
    has_plot: bool
    created_at: datetime
    result_hash: str | None = Field(
        default=None, description="SHA-256 of the result, as reviewers released it."
    )


class EpsilonByNode(_Model):
    """Privacy spent per node over all finished jobs (auditor view)."""

    node: str
    jobs: int
    epsilon_total: float
    by_job: dict[str, float]
