"""The node admin API's routes, one router per resource, assembled in one place."""

from fastapi import APIRouter

from nodes.admin_routes import jobs, node, releases, service

__all__ = ["admin_router"]

admin_router = APIRouter()
admin_router.include_router(service.router)
admin_router.include_router(jobs.router)
admin_router.include_router(releases.router)
admin_router.include_router(node.router)
