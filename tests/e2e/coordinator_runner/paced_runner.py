"""A runner for the restart test: real node gates (budget reservation), paced rounds, no engine.

``PACED_NODES`` (JSON: name → state dir) names the nodes; ``PACED_LOG`` gets one line per
run started, so the test can tell a job was never run twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence

from coordinator.runner import RoundProgress, RunResult
from federation.spec import JobSpec
from nodes.enforcement import EnforcementPoint


class PacedRunner:
    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        dirs = json.loads(os.environ["PACED_NODES"])
        with open(os.environ["PACED_LOG"], "a") as fh:
            fh.write(job_id + "\n")
        points = [EnforcementPoint(n, dirs[n]) for n in nodes]
        for p in points:
            p.accept(job, job_id, approved=True)
        for k in range(1, job.rounds + 1):
            time.sleep(0.15)
            on_progress(RoundProgress(k, job.rounds, {"auc": 0.5}))
        for p in points:
            p.release(job_id, "job ended")
        return RunResult(
            "succeeded",
            "done",
            report={"rounds": job.rounds},
            model={"parameters": [[1.0]]},
            epsilon_by_node={n: 0.1 for n in nodes},
        )


def make() -> PacedRunner:
    return PacedRunner()
