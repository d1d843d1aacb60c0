"""Job specs: what a researcher asks the federation to do, as a validated pydantic model.

A spec is written as TOML (or JSON) and validated once, on the researcher's side, at the
coordinator and at every node. Every rule that can be checked without data is checked
here, and every refusal names the field (``privacy.epsilon: must be > 0``).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consent.duo import ALL_CODES
from federation.errors import JobSpecError

__all__ = [
    "DUO_PURPOSE_CODES",
    "GlmSpec",
    "JobSpec",
    "PrivacySpec",
    "PurposeSpec",
    "SecureAggregationSpec",
    "StatsSpec",
    "TrainingSpec",
    "load_job_spec",
    "parse_job_spec",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

#: DUO codes a job may state as its purpose (categories, modifiers, ``MDS``), from consent.duo.
DUO_PURPOSE_CODES = ALL_CODES

Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrivacySpec(_Strict):
    """Record-level differential privacy for the job, per node.

    Attributes:
        epsilon: the (ε, δ) target a node may spend on this job in total.
        delta: must stay below 1/n of the node's records; nodes check that.
        max_grad_norm: per-sample gradient clipping bound of DP-SGD.
        accountant: the Opacus accountant used for calibration and reporting.
    """

    epsilon: Finite = Field(gt=0, le=100)
    delta: Finite = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: Finite = Field(default=1.0, gt=0, le=1e3)
    accountant: Literal["rdp", "prv"] = "rdp"


class PurposeSpec(_Strict):
    """Why the data are used: DUO codes, project, requester, and commercial or not."""

    duo: list[str] = Field(default_factory=lambda: ["HMB"], min_length=1)
    disease: str | None = Field(default=None, max_length=64)
    project: str = Field(default="unnamed", min_length=1, max_length=128)
    requester: str = Field(default="anonymous", min_length=1, max_length=128)
    requester_type: Literal["academic", "public", "commercial", "clinical"] = "academic"
    commercial: bool = False

    @field_validator("duo")
    @classmethod
    def _known_codes(cls, value: list[str]) -> list[str]:
        unknown = sorted({code for code in value if code not in DUO_PURPOSE_CODES})
        if unknown:
            raise ValueError(f"unknown DUO code(s) {unknown}; known: {sorted(DUO_PURPOSE_CODES)}")
        return value

    @model_validator(mode="after")
    def _commercial_requester(self) -> PurposeSpec:
        if self.requester_type == "commercial" and not self.commercial:
            raise ValueError("a commercial requester must set commercial = true")
        return self


class SecureAggregationSpec(_Strict):
    """SecAgg+ settings that a job may set; the rest are derived from the job.

    Attributes:
        enabled: secure aggregation is on unless a spec turns it off.
        clipping_range: largest absolute value any summed entry may take.
        max_weight: an upper bound on a node's example count (0: derived by the launcher).
        timeout: seconds each SecAgg+ stage waits for replies before counting a node as lost.
        max_retries: how often a round whose key set-up halted is tried again.
        reconstruction_threshold: share of a node's neighbours needed to unmask it.
    """

    enabled: bool = True
    clipping_range: Finite = Field(default=8.0, gt=0, le=1e6)
    max_weight: int = Field(default=0, ge=0, le=2**30)
    timeout: Finite = Field(default=30.0, gt=0, le=3600)
    max_retries: int = Field(default=2, ge=0, le=10)
    reconstruction_threshold: Finite = Field(default=0.6, gt=0, le=1)


class TrainingSpec(_Strict):
    """Local training settings for ``kind = "train"``.

    ``scaling`` maps a feature to a public (centre, scale) used by every node alike;
    features without one use the common data model's declared range, else none.
    """

    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, le=100_000)
    learning_rate: Finite = Field(default=0.5, gt=0, le=100)
    hidden_units: int = Field(default=16, ge=1, le=4096)
    test_fraction: Finite = Field(default=0.2, gt=0, le=0.5)
    scaling: dict[str, tuple[Finite, Finite]] = Field(default_factory=dict)

    @field_validator("scaling")
    @classmethod
    def _positive_scale(
        cls, value: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        for name, (_, scale) in value.items():
            if scale <= 0:
                raise ValueError(f"{name}: scale must be > 0")
        return value


class StatsSpec(_Strict):
    """What a ``kind = "stats"`` job computes: measures over variables, by groups.

    ``levels`` declares every grouping variable's public levels (ints or strings, such
    as a facility type); ``bins`` are public histogram edges (all variables), else
    ``histogram_bins`` equal bins over a variable's ``bounds``; ``quantiles`` are read
    off the histograms when ``quantile`` is a measure. With a ``[privacy]`` table the
    released values carry DP noise: ``distributed`` (each node adds a discrete Gaussian
    share, so not even the secure sum is exact) or ``central`` (added after aggregation).
    ``min_cell_count`` is the job's floor; a node's policy may raise it.
    """

    measures: list[
        Literal["count", "sum", "mean", "variance", "proportion", "histogram", "quantile"]
    ] = Field(default_factory=lambda: ["count", "mean"], min_length=1)  # type: ignore[arg-type]
    variables: list[str] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=list, max_length=2)
    bins: list[Finite] = Field(default_factory=list)
    levels: dict[str, list[int | str]] = Field(default_factory=dict)
    bounds: dict[str, tuple[Finite, Finite]] = Field(default_factory=dict)
    quantiles: list[Finite] = Field(default_factory=lambda: [0.25, 0.5, 0.75])
    histogram_bins: int = Field(default=50, ge=1, le=10_000)
    dp_mode: Literal["distributed", "central"] = "distributed"
    dp_mechanism: Literal["gaussian", "laplace"] = "gaussian"
    min_cell_count: int = Field(default=10, ge=1, le=100_000)

    @field_validator("quantiles")
    @classmethod
    def _probabilities(cls, value: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in value):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        return value


class GlmSpec(_Strict):
    """Settings of a ``kind = "glm"`` job (Newton-Raphson / IRLS).

    ``bounds`` gives a public (low, high) range per numeric feature (else the data
    model's declared range); with ``y_bound`` (a bound on ``|y|``) it sizes the public
    scale that brings every node's summed statistics into SecAgg+'s range.
    """

    family: Literal["binomial", "gaussian", "poisson"] = "binomial"
    categorical: dict[str, int] = Field(default_factory=dict)
    levels: dict[str, list[int]] = Field(default_factory=dict)
    max_iterations: int = Field(default=25, ge=1, le=200)
    tolerance: Finite = Field(default=1e-10, gt=0, lt=1)
    min_events_per_parameter: int = Field(default=10, ge=0, le=10_000)
    bounds: dict[str, tuple[Finite, Finite]] = Field(default_factory=dict)
    y_bound: Finite = Field(default=1.0, gt=0, le=1e9)


class JobSpec(_Strict):
    """A federated job: what to compute, on which data, for which purpose, with which privacy.

    Attributes:
        kind: ``train`` (DP-SGD model), ``stats`` (aggregate statistics) or ``glm``.
        domain: the common-data-model domain the job reads (``births``, ...).
        features: input columns; never direct identifiers (nodes check that too).
        label: the outcome column (binary for ``train``).
        model: a name in the model registry (``train`` only).
        rounds: federated rounds (``train``).
        nodes: the nodes to run on; empty means every node that approves.
        min_nodes: fewer approving or surviving nodes than this fails the job.
    """

    kind: Literal["train", "stats", "glm"]
    name: str = Field(default="job", min_length=1, max_length=128)
    domain: str = Field(default="births", pattern=r"^[a-z_]{1,32}$")
    features: list[str] = Field(default_factory=list, max_length=256)
    label: str | None = None
    model: str = "logreg"
    rounds: int = Field(default=5, ge=1, le=1000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    nodes: list[str] = Field(default_factory=list)
    min_nodes: int = Field(default=2, ge=1, le=10_000)
    purpose: PurposeSpec = Field(default_factory=PurposeSpec)
    privacy: PrivacySpec | None = None
    secure_aggregation: SecureAggregationSpec = Field(default_factory=SecureAggregationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    stats: StatsSpec = Field(default_factory=StatsSpec)
    glm: GlmSpec = Field(default_factory=GlmSpec)

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a column name (letters, digits, _)")
        if len(set(value)) != len(value):
            raise ValueError("features repeat a column")
        return value

    @field_validator("label")
    @classmethod
    def _label_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r} is not a column name (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _kind_rules(self) -> JobSpec:
        if self.kind in ("train", "glm"):
            if not self.features:
                raise ValueError("features: a train or glm job needs at least one feature")
            if self.label is None:
                raise ValueError("label: a train or glm job needs a label")
            if self.label in self.features:
                raise ValueError("label: the label is also listed as a feature")
        if self.kind == "train" and self.privacy is None:
            raise ValueError("privacy: a train job needs a [privacy] table (epsilon, delta)")
        if self.nodes and len(set(self.nodes)) != len(self.nodes):
            raise ValueError("nodes: a node is listed twice")
        if self.nodes and self.min_nodes > len(self.nodes):
            raise ValueError("min_nodes: larger than the number of nodes listed")
        return self

    def to_policy_request(self, job_id: str) -> Any:
        """Return the job as a node policy sees it (:class:`policies.request.JobRequest`).

        Raises:
            pydantic.ValidationError: the job id is empty or too long.
        """
        from policies.request import JobRequest

        reads = [c for c in self.columns() if c != self.label]
        return JobRequest(
            job_id=job_id,
            kind=self.kind,
            domain=self.domain,
            features=tuple(reads),
            label=self.label,
            model=self.model if self.kind == "train" else None,
            purposes=tuple(self.purpose.duo),
            disease=self.purpose.disease,
            commercial=self.purpose.commercial,
            requester=self.purpose.requester,
            requester_type=self.purpose.requester_type,
            epsilon=self.privacy.epsilon if self.privacy else None,
            delta=self.privacy.delta if self.privacy else None,
            secure_aggregation=self.secure_aggregation.enabled,
            rounds=self.rounds if self.kind == "train" else 1,
        )

    def columns(self) -> list[str]:
        """Return every data column the job reads (features, label, stats variables, groups)."""
        cols = list(self.features)
        extra = [self.label] if self.label else []
        extra += self.stats.variables + self.stats.group_by if self.kind == "stats" else []
        for col in extra:
            if col not in cols:
                cols.append(col)
        return cols


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts) or "spec"


def parse_job_spec(data: dict[str, Any]) -> JobSpec:
    """Validate a job spec given as a mapping.

    Returns:
        The validated :class:`JobSpec`.

    Raises:
        JobSpecError: naming the first offending field and why.
    """
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = _field_path(tuple(err["loc"]))
        if field == "spec" and ":" in msg:
            field, msg = (s.strip() for s in msg.split(":", 1))
        raise JobSpecError(field, msg) from None


def load_job_spec(path: Path) -> JobSpec:
    """Read and validate a job spec from a TOML or JSON file.

    Returns:
        The validated :class:`JobSpec`.

    Raises:
        JobSpecError: the file is missing or malformed, or a field is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobSpecError("spec", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise JobSpecError(
            "spec", f"{path.name} is not valid {path.suffix[1:].upper()}: {exc}"
        ) from None
    return parse_job_spec(data)


def check_finite(name: str, value: float) -> float:
    """Return ``value`` when finite.

    Raises:
        JobSpecError: ``value`` is NaN or infinite.
    """
    if not math.isfinite(value):
        raise JobSpecError(name, "must be a finite number")
    return value
