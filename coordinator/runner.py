"""The interface between the coordinator and a federation engine that runs approved jobs.

The coordinator never imports an engine. It is handed a :class:`Runner` when the app
is built (``create_app(settings, runner=...)``): the embedded engine's runner lives in
``hamanasu.local_runner`` (one machine, for ``hamanasu up`` and tests), a deployment
engine's (SuperLink + SuperNodes) plugs in the same way. The coordinator calls
:meth:`Runner.run` in a worker thread once a job is approved, and stores what it
reports; a runner only has to run, report rounds, honour cancellation, and return.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from federation.spec import JobSpec

__all__ = ["RoundProgress", "RunCancelled", "RunResult", "Runner"]


@dataclass(frozen=True)
class RoundProgress:
    """A finished round: its number (1-based), the planned total, and aggregate metrics."""

    round: int
    rounds_total: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """What a run ended with; stored as the job's result.

    Attributes:
        status: ``succeeded`` or ``failed``.
        reason: why (for a failure, the cause in one sentence; never data).
        report: the JSON report (per-round metrics, settings, ε per node, ...).
        model: the aggregate model as JSON (e.g. ``{"parameters": [...]}``), if any.
        epsilon_by_node: ε each node spent on the job.
        plot_png: the report's plot, PNG bytes, if any.
    """

    status: Literal["succeeded", "failed"]
    reason: str
    report: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    epsilon_by_node: dict[str, float] = field(default_factory=dict)
    plot_png: bytes | None = None


class RunCancelled(Exception):
    """Raised by the ``on_progress`` callback once the job was cancelled.

    A runner may let it propagate (the coordinator keeps the job cancelled) or stop at
    its next round.
    """


@runtime_checkable
class Runner(Protocol):
    """Runs one approved job on a federation engine (blocking; called in a worker thread)."""

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        """Run ``job`` on ``nodes`` (the nodes that approved it) and return its result.

        Args:
            job: the validated spec.
            job_id: the coordinator's id; nodes key their budget and ledger by it.
            nodes: the node names to run on (at least ``job.min_nodes``).
            on_progress: call after every finished round; raises :class:`RunCancelled`
                once the job is cancelled.
            cancelled: set when the job is cancelled; stop at the next round boundary.

        Returns:
            The :class:`RunResult`; a failure is a result with ``status="failed"``, not an
            exception (an exception is stored as a failure with its type and message).
        """
        ...
