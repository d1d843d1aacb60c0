"""The researcher's client for notebooks: submit a job, wait with progress, get DataFrames.

``Client`` wraps the coordinator's HTTP client (:mod:`coordinator.client`) with what an
epidemiologist used to statsmodels or DataSHIELD expects::

    from hamanasu import Client

    client = Client("http://127.0.0.1:8750", token_file="consortium/tokens/researcher")
    results = client.run("examples/iwamizawa/lbw_glm.toml")
    print(results.summary())
    results.coefficients  # one row per term, named as in the formula or feature list

Results are the same JSON the CLI writes (``hamanasu job results``), read into pandas
frames by :mod:`federation.result_tables`, the module that prints the CLI's tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from coordinator.client import CoordinatorClient
from federation.api_client import read_token
from federation.api_models import JobPublic
from federation.result_tables import (
    cells_frame,
    coefficients_frame,
    epsilon_frame,
    rounds_frame,
    summary_text,
)
from federation.spec import read_spec_text

__all__ = ["Client", "JobFailed", "Results"]

DEFAULT_URL = "http://127.0.0.1:8750"


class JobFailed(RuntimeError):
    """A job ended in another state than ``succeeded``; the message gives its reason."""

    def __init__(self, job: JobPublic) -> None:
        super().__init__(f"job {job.id} {job.state}: {job.reason}")
        self.job = job


class Results:
    """A finished job's result as pandas objects.

    Attributes:
        job_id: the job's id.
        report: the result as the coordinator stores it (a JSON-ready mapping).
        epsilon_by_node: ε each node spent on the job.
    """

    def __init__(
        self, job_id: str, report: Mapping[str, Any], epsilon_by_node: Mapping[str, float]
    ) -> None:
        self.job_id = job_id
        self.report = dict(report)
        self.epsilon_by_node = dict(epsilon_by_node)

    @property
    def coefficients(self) -> pd.DataFrame:
        """Return a GLM's table: one row per term (estimate, std_error, z, p_value, CI...)."""
        return coefficients_frame(self.report)

    @property
    def cells(self) -> pd.DataFrame:
        """Return a statistics job's cells (groups, statistic, value, CI; suppressed cells)."""
        return cells_frame(self.report)

    @property
    def rounds(self) -> pd.DataFrame:
        """Return a training job's federated metrics per round (AUC, accuracy, log-loss...)."""
        return rounds_frame(self.report)

    @property
    def epsilon(self) -> pd.Series:
        """Return ε spent per node, indexed by node name."""
        return epsilon_frame(self.report, self.epsilon_by_node)

    def summary(self) -> str:
        """Return the table a statistician expects (the same one ``hamanasu simulate`` prints)."""
        return summary_text(self.report, self.epsilon_by_node)

    def __repr__(self) -> str:
        return f"<Results {self.job_id} ({self.report.get('kind', 'job')})>"


class Client:
    """Submit jobs to a coordinator and read their results as DataFrames.

    Args:
        url: the coordinator's URL (default ``HAMANASU_COORDINATOR_URL`` or
            ``http://127.0.0.1:8750``).
        token: the researcher's API token; or
        token_file: a 0600 file holding it (default: ``HAMANASU_TOKEN``).
        ca_file: a CA certificate to verify an HTTPS coordinator with.

    Raises:
        federation.api_client.TokenError: no token, or a token file others can read.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        url = url or os.environ.get("HAMANASU_COORDINATOR_URL") or DEFAULT_URL
        if token is None:
            token = read_token(Path(token_file) if token_file else None, "token_file")
        self.api = CoordinatorClient(url, token, ca_file=Path(ca_file) if ca_file else None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection to the coordinator."""
        self.api.close()

    def submit(self, spec: Mapping[str, Any] | str | Path) -> str:
        """Submit a job: a spec mapping, or the path of a TOML or JSON spec file.

        Returns:
            The job's id.

        Raises:
            coordinator.client.CoordinatorAPIError: the coordinator refused the spec (4xx,
                with the field named).
        """
        return self.api.submit(_spec_mapping(spec)).id

    def wait(
        self, job_id: str, *, progress: bool = True, timeout: float | None = None
    ) -> JobPublic:
        """Wait until a job ends, showing its state and rounds as a progress bar.

        Returns:
            The job's final status.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        if not progress:
            return self.api.wait(job_id, poll=0.5, timeout=timeout)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(job_id, total=None)

            def show(job: JobPublic) -> None:
                bar.update(
                    task,
                    description=f"{job.name} {job.state}",
                    completed=job.round,
                    # A GLM's rounds are Newton steps: their number is known at the end only.
                    total=job.rounds_total if job.rounds_total >= job.round else None,
                )

            return self.api.wait(job_id, poll=0.5, timeout=timeout, on_update=show)

    def results(self, job_id: str) -> Results:
        """Return a finished job's results.

        Raises:
            coordinator.client.CoordinatorAPIError: no result (yet), or held for the nodes'
                release review (409, the message says why).
        """
        result = self.api.result(job_id)
        return Results(job_id, result.report, result.epsilon_by_node)

    def run(
        self,
        spec: Mapping[str, Any] | str | Path,
        *,
        progress: bool = True,
        timeout: float | None = None,
    ) -> Results:
        """Submit a job, wait for it with progress, and return its results.

        Raises:
            JobFailed: the job was rejected, failed or was cancelled (with its reason).
            coordinator.client.CoordinatorAPIError: the coordinator refused the spec.
            TimeoutError: ``timeout`` seconds passed first.
        """
        job = self.wait(self.submit(spec), progress=progress, timeout=timeout)
        if job.state != "succeeded":
            raise JobFailed(job)
        return self.results(job.id)


def _spec_mapping(spec: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Return a spec mapping from a mapping or a TOML/JSON file path."""
    if isinstance(spec, Mapping):
        return dict(spec)
    path = Path(spec)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return read_spec_text(text, "json", str(path))
    return read_spec_text(text, "toml", str(path))
