"""Registered nodes, their published caps and SuperNode keys, the nodes a job can target."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.db import aware
from coordinator.errors import Conflict, InvalidSpec, NotFound
from coordinator.models import Node
from coordinator.schemas import NodeCreate, NodePublic
from coordinator.store.base import StoreBase
from federation.api_models import NodeRegistration
from federation.spec import JobSpec

__all__ = ["NodeStore", "job_targets"]


def _publishes(node: Node, domain: str, column: str) -> bool:
    """Whether ``node`` publishes ``column`` for ``domain`` (a node with no domains: all)."""
    return (
        not node.domains
        or node.domains.get(domain) == "*"
        or column in (node.domains.get(domain) or [])
    )


def _node_public(n: Node) -> NodePublic:
    return NodePublic(
        name=n.name,
        registered_at=aware(n.registered_at),
        last_seen_at=aware(n.last_seen_at),
        max_epsilon_per_job=n.max_epsilon_per_job,
        domains=n.domains or {},
        approval_mode=n.approval_mode,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
        public_key_pem=n.public_key_pem,
        release_review=n.release_review,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
    )


def _registered_node(s: Session, name: str) -> Node:
    """Return node ``name`` in session ``s``.

    Raises:
        NotFound: the node is not registered (field ``name``).
    """
    n = s.get(Node, name)
    if n is None:
        raise NotFound(f"name: no node named {name!r}", field="name")
    return n


def job_targets(s: Session, spec: JobSpec) -> list[Node]:
    """Check the job against the nodes' published caps; return the targeted nodes.

    Raises:
        InvalidSpec: an unknown node, or fewer eligible nodes than ``min_nodes`` because of
            the domain, a feature, or ε (naming that field).
    """
    known = {n.name: n for n in s.scalars(select(Node).order_by(Node.name))}
    if spec.nodes:
        unknown = [n for n in spec.nodes if n not in known]
        if unknown:
            raise InvalidSpec(
                f"unknown node(s) {unknown}; registered: {sorted(known)}", field="nodes"
            )
        targets = [known[n] for n in spec.nodes]
    else:
        targets = list(known.values())
    if len(targets) < spec.min_nodes:
        raise InvalidSpec(
            f"the job needs {spec.min_nodes} nodes; {len(targets)} targeted", field="min_nodes"
        )
    eligible = list(targets)

    def narrow(field: str, keep: Callable[[Node], bool], why: str) -> None:
        nonlocal eligible
        kept = [n for n in eligible if keep(n)]
        if len(kept) < spec.min_nodes:
            raise InvalidSpec(
                f"{why}; {len(kept)} targeted node(s) allow it, the job needs {spec.min_nodes}",
                field=field,
            )
        eligible = kept

    narrow(
        "domain",
        lambda n: not n.domains or spec.domain in n.domains,
        f"domain {spec.domain!r} is not served",
    )
    for col in spec.columns():
        field = "label" if col == spec.label else "features"
        narrow(
            field,
            partial(_publishes, domain=spec.domain, column=col),
            f"column {col!r} is not published by the nodes for domain {spec.domain!r}",
        )
    if spec.privacy is not None:
        eps = spec.privacy.epsilon
        caps = {
            n.name: n.max_epsilon_per_job for n in eligible if n.max_epsilon_per_job is not None
        }
        narrow(
            "privacy.epsilon",
            lambda n: n.max_epsilon_per_job is None or eps <= n.max_epsilon_per_job,
            f"epsilon {eps} is above the per-job caps {caps}",
        )
    return targets


class NodeStore(StoreBase):
    """Nodes: registration by the operator, the caps their services publish, SuperNode keys."""

    def register_node(self, data: NodeCreate) -> NodePublic:
        """Register a node (operator).

        Raises:
            Conflict: the name is taken.
        """
        with self.sessions.begin() as s:
            if s.get(Node, data.name) is not None:
                raise Conflict(f"name: node {data.name!r} is registered", field="name")
            n = Node(
                name=data.name,
                registered_at=self.clock(),
                max_epsilon_per_job=data.max_epsilon_per_job,
                domains=dict(data.domains),
                approval_mode=data.approval_mode,
                public_key_pem=data.public_key_pem,
                release_review=data.release_review,
            )
            s.add(n)
            s.flush()
            return _node_public(n)

    def publish_node(self, name: str, data: NodeRegistration) -> NodePublic:
        """Record the caps a node's service publishes, and that it was seen now.

        Raises:
            NotFound: the node is not registered.
        """
        with self.sessions.begin() as s:
            n = _registered_node(s, name)
            n.max_epsilon_per_job = data.max_epsilon_per_job
            n.domains = dict(data.domains)
            n.approval_mode = data.approval_mode
            n.public_key_pem = data.public_key_pem
            n.release_review = data.release_review
            n.last_seen_at = self.clock()
            return _node_public(n)

    def set_supernode_key(self, name: str, public_key: str) -> None:
        """Record node ``name``'s SuperNode public key (registered with the SuperLink).

        Raises:
            NotFound: the node is not registered.
        """
        with self.sessions.begin() as s:
            _registered_node(s, name).supernode_key = public_key.strip()

    def supernode_keys(self) -> dict[str, str]:
        """Return node name -> SuperNode public key, for every node that has one."""
        with self.sessions() as s:
            rows = s.execute(select(Node.name, Node.supernode_key).order_by(Node.name))
            return {name: key for name, key in rows if key}

    def list_nodes(self) -> list[NodePublic]:
        """Return every registered node, by name."""
        with self.sessions() as s:
            return [_node_public(n) for n in s.scalars(select(Node).order_by(Node.name))]
