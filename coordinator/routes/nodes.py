"""Node routes: registration, caps, jobs, decisions and release review.

The operator registers nodes and issues each node's service its own token (a
``node_service`` principal bound to the node; issuing a new one revokes the old). The
service publishes its caps, pulls the jobs that target it and posts its policy's
decisions; the node's human admins, with their own tokens, decide as admins and review
the results held for the node's release review (output checking).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from coordinator.errors import Conflict, Forbidden, InvalidInput, NotFound
from coordinator.routes.deps import (
    Admin,
    Caller,
    LifecycleDep,
    NodeCaller,
    NodeService,
    Operator,
    StoreDep,
    own_node,
)
from coordinator.schemas import (
    NodeCreate,
    NodePublic,
    Role,
    SupernodeKeyCreate,
    SupernodeKeyPublic,
    TokenIssued,
)
from federation.api_models import (
    ApprovalPublic,
    ApprovalStatus,
    DecisionCreate,
    NodeJobView,
    NodeRegistration,
    ReleaseDecisionCreate,
    ReleaseStatus,
    ReleaseView,
)

router = APIRouter(tags=["nodes"])

NodePath = Annotated[str, Path(min_length=1, max_length=64)]
JobPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/nodes", status_code=201)
def register_node(body: NodeCreate, _: Operator, store: StoreDep) -> NodePublic:
    """Register a node (its admin principal is registered separately)."""
    return store.register_node(body)


@router.post("/nodes/{name}/service-token", status_code=201)
def issue_service_token(name: NodePath, _: Operator, store: StoreDep) -> TokenIssued:
    """Issue the node's service a new token (shown once); its previous tokens stop working."""
    return store.issue_service_token(name)


@router.post("/nodes/{name}/supernode-key", status_code=201)
def register_supernode_key(
    name: NodePath, body: SupernodeKeyCreate, _: Operator, store: StoreDep, request: Request
) -> SupernodeKeyPublic:
    """Register a node's SuperNode public key with the SuperLink (only such nodes can join).

    The coordinator keeps the key and registers it again whenever it starts its SuperLink.
    """
    engine = request.app.state.engine
    if engine is None:
        raise Conflict(
            "engine: this coordinator runs no SuperLink (start it with engine = deployment)",
            field="engine",
        )
    if name not in {n.name for n in store.list_nodes()}:
        raise NotFound(f"name: no node named {name!r}", field="name")
    try:
        node_id = engine.register_node(name, body.public_key)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="public_key") from None
    store.set_supernode_key(name, body.public_key)
    return SupernodeKeyPublic(node=name, flower_node_id=node_id)


@router.get("/nodes")
def list_nodes(_: Caller, store: StoreDep, request: Request) -> list[NodePublic]:
    """List the registered nodes, the caps they publish and whether their SuperNode is online."""
    nodes = store.list_nodes()
    engine = request.app.state.engine
    if engine is None:
        return nodes
    try:
        online = engine.online()
    except Exception:  # noqa: BLE001 - the SuperLink is down: say unknown, do not fail the list
        return nodes
    return [n.model_copy(update={"supernode_online": online.get(n.name, False)}) for n in nodes]


@router.put("/nodes/{name}/registration")
def publish_node(
    name: NodePath, body: NodeRegistration, caller: NodeService, store: StoreDep
) -> NodePublic:
    """A node's service publishes its caps (per-job ε cap, domains, approval mode, key)."""
    own_node(caller, name)
    return store.publish_node(name, body)


@router.get("/nodes/{name}/jobs")
def node_jobs(
    name: NodePath,
    caller: NodeService,
    store: StoreDep,
    status: Annotated[
        ApprovalStatus | None, Query(description="Only approvals in this status.")
    ] = None,
    include_finished: Annotated[bool, Query(description="Also finished jobs.")] = False,
) -> list[NodeJobView]:
    """The jobs that target this node, with the node's approval of each."""
    own_node(caller, name)
    return store.node_jobs(name, status, include_finished)


@router.post("/nodes/{name}/jobs/{job_id}/decision")
def decide(
    name: NodePath,
    job_id: JobPath,
    body: DecisionCreate,
    caller: NodeCaller,
    lifecycle: LifecycleDep,
) -> ApprovalPublic:
    """Record the node's decision: its policy's outcome or its admin's, with reasons.

    The label follows the caller's role, never the body: the node's service posts its
    policy's outcome (``policy``), a human admin's decision is always ``admin``, so an
    admin cannot pass a decision off as the policy's. A service asking to decide as an
    admin, or an admin asking to post as the policy (``source = "policy"`` spelled
    out), is refused (403, field ``source``).
    """
    own_node(caller, name)
    if caller.role == Role.NODE_SERVICE:
        if body.source != "policy":
            raise Forbidden(
                "source: a node service posts its policy's decisions; "
                "an admin decides with their own token",
                field="source",
            )
    elif "source" in body.model_fields_set and body.source == "policy":
        raise Forbidden(
            "source: a policy's decision is posted by the node's service with the node's "
            "service credential; a human admin decides as admin (source = admin)",
            field="source",
        )
    else:
        body = body.model_copy(update={"source": "admin"})
    return lifecycle.decide(job_id, name, body, by=caller.name)


@router.get("/nodes/{name}/releases")
def node_releases(
    name: NodePath,
    caller: NodeCaller,
    store: StoreDep,
    status: Annotated[
        ReleaseStatus | None, Query(description="Only reviews in this status.")
    ] = None,
) -> list[ReleaseView]:
    """Results held for this node's release review: a summary each (never the data)."""
    own_node(caller, name)
    return store.release_views(name, status)


@router.post("/nodes/{name}/jobs/{job_id}/release")
def release_decision(
    name: NodePath, job_id: JobPath, body: ReleaseDecisionCreate, caller: Admin, store: StoreDep
) -> ReleaseView:
    """Release or withhold (with a reason) a held result as one of this node's reviewers."""
    own_node(caller, name)
    return store.release_decide(job_id, name, body, caller)
