"""Health endpoints for load balancers, container engines and systemd (no authentication).

* ``GET /healthz``: liveness. The process serves requests; nothing else is checked, so a
  database outage never gets the service restarted in a loop.
* ``GET /readyz``: readiness. The database answers a query and, with the deployment
  engine, the SuperLink runs and answers its Control API. 200 with every check ``ok``,
  else 503 with the failing check's reason (no secret, no address of the database).
* ``GET /health``: the older combined check (liveness and the database), kept for callers
  that use it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["readiness", "router"]

router = APIRouter(tags=["health"])


def readiness(app_state: Any) -> dict[str, str]:
    """Run the readiness checks against the app's store and Flower engine.

    Returns:
        check name -> ``ok`` or the reason it fails (``database``, and ``superlink`` when
        the coordinator runs the deployment engine).
    """
    checks: dict[str, str] = {}
    try:
        app_state.store.ping()
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
    engine = getattr(app_state, "engine", None)
    if engine is not None:
        checks["superlink"] = engine.problem() or "ok"
    return checks


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers (no database or SuperLink call)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "a check failed; the body names it and says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers and, with the deployment engine, the SuperLink does."""
    checks = await run_in_threadpool(readiness, request.app.state)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/health")
def health(request: Request) -> dict[str, str]:
    """Liveness and database reachability (a database error answers 503)."""
    request.app.state.store.ping()
    return {"status": "ok"}
