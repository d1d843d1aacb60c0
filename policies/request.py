"""The policies-side description of a job: what a node policy evaluates.

:class:`JobRequest` carries only what the policy rules look at, so ``policies`` needs no
import of ``federation``; ``federation.spec.JobSpec.to_policy_request`` builds one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DpMechanism", "JobKind", "JobRequest", "RequesterType"]

JobKind = Literal["train", "stats", "glm"]
RequesterType = Literal["academic", "public", "commercial", "clinical"]
DpMechanism = Literal["dp_sgd", "gaussian", "laplace", "discrete_gaussian"]

_Name = Annotated[str, Field(min_length=1, max_length=128)]


class JobRequest(BaseModel):
    """A job as a node policy sees it.

    Attributes:
        job_id: the coordinator's job id.
        kind: ``train``, ``stats`` or ``glm``.
        domain: the common-data-model domain read (``births``).
        features: every column the job reads besides the label (for stats jobs: the
            variables and grouping columns too).
        label: the outcome column, if any.
        model: a model-registry name (``train`` jobs), else ``None``.
        purposes: DUO codes stating the purpose (``["HMB"]``).
        disease: the disease for a ``DS`` purpose, if any.
        commercial: whether the use is commercial.
        requester: the requesting person's or organisation's id.
        requester_type: ``academic``, ``public``, ``commercial`` or ``clinical``.
        epsilon: the job's total DP ε target per node (``None``: no DP).
        delta: the job's DP δ target per node.
        dp_mechanism: the DP mechanism that actually runs for this job (``dp_sgd``,
            ``gaussian``, ``laplace``, ``discrete_gaussian``), named by the federation
            from the job's kind and settings; ``None`` when none runs, whatever ε says.
        exact_releases: what the job releases to the researcher without DP noise
            (``evaluation``: a training job's held-out evaluation), named by the
            federation from the code path that runs; a policy requiring DP refuses any.
        secure_aggregation: whether updates travel through SecAgg+.
        rounds: federated rounds.
        linked: whether the job joins this node's columns with other holders' (``[link]``).

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: _Name
    kind: JobKind
    domain: Annotated[str, Field(min_length=1, max_length=64)]
    features: tuple[_Name, ...] = ()
    label: _Name | None = None
    model: _Name | None = None
    purposes: tuple[_Name, ...] = Field(default=("HMB",), min_length=1)
    disease: str | None = Field(default=None, max_length=64)
    commercial: bool = False
    requester: _Name = "anonymous"
    requester_type: RequesterType = "academic"
    epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    delta: float | None = Field(default=None, ge=0, lt=1, allow_inf_nan=False)
    dp_mechanism: DpMechanism | None = None
    exact_releases: tuple[_Name, ...] = Field(default=(), max_length=8)
    secure_aggregation: bool = True
    rounds: int = Field(default=1, ge=1, le=100_000)
    linked: bool = False

    @field_validator("purposes")
    @classmethod
    def _upper_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(code.strip().upper() for code in value)

    def columns(self) -> tuple[str, ...]:
        """Return every column the job reads: the features, then the label if not among them.

        Returns:
            The column names in order, without repeats.

        """
        cols = list(dict.fromkeys(self.features))
        if self.label is not None and self.label not in cols:
            cols.append(self.label)
        return tuple(cols)
