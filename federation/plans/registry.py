"""The registry of job kinds: one plan per kind, found by the spec's ``kind``.

A *plan* holds everything both engines need to run one job kind: the public scales
and SecAgg+ settings derived from the spec, the node-side local step, the server-side
step, the DP mechanism and what a round charges, and the assembly of the result. The
embedded runner (``hamanasu``), the deployment ServerApp (``coordinator``) and the
node's ClientApp (``nodes``) all ask :func:`plan_for` for the plan and call it; none of
them derives a scale, a SecAgg+ setting or a charge on its own.

Adding a job kind:

1. Write its plan in a module of this package (say ``federation/plans/linked_stats.py``):
   a class built from ``(spec, inputs)`` (:class:`~federation.plans.base.PlanInputs`:
   number of nodes, a record bound, the data model's declared ranges, the cell floor).
   A kind that runs as rounds of secure sums subclasses
   :class:`~federation.plans.base.SumPlan` and both engines run it unchanged; a kind
   with another shape of run (training's FedAvg, a PSI + MPC exchange) brings its own
   methods and its engine entry points dispatch on the plan's class.
2. Register it at the bottom of that module: ``register_plan("linked_stats", MyPlan)``.
3. Import the module in ``federation/plans/__init__.py`` so registration happens when
   the package is imported (every engine imports the package before asking for a plan).

Registering a kind twice raises :class:`PlanRegistryError` unless ``replace=True`` says
the overwrite is meant (tests swapping a plan for an instrumented one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from federation.errors import FederationError
from federation.plans.base import PlanInputs
from federation.spec import JobSpec

__all__ = ["PlanFactory", "PlanRegistryError", "plan_for", "register_plan", "registered_kinds"]

#: ``(spec, public inputs) -> plan``; a plan class is one.
PlanFactory = Callable[[JobSpec, PlanInputs], Any]

_PLANS: dict[str, PlanFactory] = {}


class PlanRegistryError(FederationError, ValueError):
    """A job kind is registered twice, or a spec names a kind without a plan."""


def register_plan(kind: str, factory: PlanFactory, *, replace: bool = False) -> None:
    """Register the plan of job kind ``kind``.

    Raises:
        PlanRegistryError: ``kind`` already has a plan and ``replace`` is False, or
            ``kind`` is empty.
    """
    if not kind:
        raise PlanRegistryError("kind: a plan needs a non-empty job kind")
    if kind in _PLANS and not replace and _PLANS[kind] is not factory:
        raise PlanRegistryError(
            f"kind: {kind!r} already has a plan ({_PLANS[kind]!r}); pass replace=True to overwrite"
        )
    _PLANS[kind] = factory


def registered_kinds() -> list[str]:
    """Return the job kinds that have a plan, sorted."""
    return sorted(_PLANS)


def plan_for(spec: JobSpec, inputs: PlanInputs) -> Any:
    """Return the plan of ``spec`` for a run with the given public inputs.

    Raises:
        PlanRegistryError: no plan is registered for ``spec.kind``.
        ValueError: the plan refuses the spec or the inputs (a variable without public
            bounds, too few nodes, no record bound where SecAgg+ needs one).
    """
    factory = _PLANS.get(spec.kind)
    if factory is None:
        raise PlanRegistryError(
            f"kind: {spec.kind!r} has no plan (known: {', '.join(registered_kinds())})"
        )
    return factory(spec, inputs)
