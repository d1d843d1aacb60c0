"""The coordinator's routes, assembled in one place."""

from fastapi import APIRouter

from coordinator.routes import audit, jobs, node_audit, nodes, principals

__all__ = ["api_router"]

api_router = APIRouter()
api_router.include_router(principals.router)
api_router.include_router(nodes.router)
api_router.include_router(jobs.router)
api_router.include_router(audit.router)
api_router.include_router(node_audit.router)
