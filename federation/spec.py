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
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consent.duo import ALL_CODES
from federation.errors import JobSpecError
from federation.evaluation_dp import EvaluationSpec

if TYPE_CHECKING:
    from policies.request import DpMechanism
from federation.log_escape import has_controls

__all__ = [
    "DUO_PURPOSE_CODES", "GlmSpec", "JobSpec", "LinkSpec", "PrivacySpec", "PurposeSpec",
    "SecureAggregationSpec", "StatsSpec", "TrainingSpec", "load_job_spec", "parse_job_spec",
    "read_spec_text"
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: A column name, optionally qualified by its domain (``births.parity``; linked jobs only).
_QUALIFIED = re.compile(r"^([a-z_]{1,32}\.)?[A-Za-z_][A-Za-z0-9_]{0,63}$")

#: DUO codes a job may state as its purpose (categories, modifiers, ``MDS``), from consent.duo.
DUO_PURPOSE_CODES = ALL_CODES

#: Numbers are strict: ``"3"`` or ``true`` where a number is meant is refused, not coerced.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True)]
Flag = Annotated[bool, Field(strict=True)]
Column = Annotated[str, Field(pattern=_QUALIFIED.pattern)]
Level = Annotated[int, Field(strict=True)] | Annotated[str, Field(min_length=1, max_length=64)]

#: Every list and table in a spec is bounded, so validating one costs little.
MAX_COLUMNS = 256
MAX_LEVELS = 1000
MAX_BINS = 10_001
MAX_NODES = 1000
#: Largest secure-sum vector a statistics job may ask for (cells x blocks).
MAX_SUM_ENTRIES = 1_000_000
#: Deepest nesting of tables and arrays a spec file may have.
MAX_DEPTH = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrivacySpec(_Strict):
    """Record-level differential privacy for the job, per node.

    Attributes:
        epsilon: the (ε, δ) target a node may spend on this job in total.
        delta: must stay below 1/n of the node's records; nodes check that.
        max_grad_norm: per-sample gradient clipping bound of DP-SGD.
        accountant: the accountant used for calibration and reporting: ``pld``
            (privacy-loss distributions, dp_accounting: the tightest, and what budgets
            charge) or Opacus's looser ``rdp`` / ``prv``.
        max_rows_per_subject: rows one resident (subject pseudonym) may contribute; a
            node keeps the first ones and drops the rest, so ε is per resident. DP-SGD
            runs with 1; statistics and GLM multiply their sensitivity by it (twins: 2).
    """

    epsilon: Finite = Field(gt=0, le=100)
    delta: Finite = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: Finite = Field(default=1.0, gt=0, le=1e3)
    accountant: Literal["pld", "rdp", "prv"] = "pld"
    max_rows_per_subject: Count = Field(default=1, ge=1, le=16)


class PurposeSpec(_Strict):
    """Why the data are used: DUO codes, project, requester, and commercial or not."""

    duo: list[str] = Field(default_factory=lambda: ["HMB"], min_length=1, max_length=32)
    disease: str | None = Field(default=None, max_length=64)
    project: str = Field(default="unnamed", min_length=1, max_length=128)
    requester: str = Field(default="anonymous", min_length=1, max_length=128)
    requester_type: Literal["academic", "public", "commercial", "clinical"] = "academic"
    commercial: Flag = False

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

    enabled: Flag = True
    clipping_range: Finite = Field(default=8.0, gt=0, le=1e6)
    max_weight: Count = Field(default=0, ge=0, le=2**30)
    timeout: Finite = Field(default=30.0, gt=0, le=3600)
    max_retries: Count = Field(default=2, ge=0, le=10)
    reconstruction_threshold: Finite = Field(default=0.6, gt=0, le=1)


class TrainingSpec(_Strict):
    """Local training settings for ``kind = "train"``.

    ``scaling`` maps a feature to a public (centre, scale) used by every node alike;
    features without one use the common data model's declared range, else none.
    """

    local_epochs: Count = Field(default=1, ge=1, le=100)
    batch_size: Count = Field(default=64, ge=1, le=100_000)
    learning_rate: Finite = Field(default=0.5, gt=0, le=100)
    hidden_units: Count = Field(default=16, ge=1, le=4096)
    test_fraction: Finite = Field(default=0.2, gt=0, le=0.5)
    scaling: dict[Column, tuple[Finite, Finite]] = Field(
        default_factory=dict, max_length=MAX_COLUMNS
    )

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
    ] = Field(default_factory=lambda: ["count", "mean"], min_length=1, max_length=7)  # type: ignore[arg-type]
    variables: list[Column] = Field(default_factory=list, max_length=MAX_COLUMNS)
    group_by: list[Column] = Field(default_factory=list, max_length=2)
    bins: list[Finite] = Field(default_factory=list, max_length=MAX_BINS)
    levels: dict[Column, Annotated[list[Level], Field(max_length=MAX_LEVELS)]] = Field(
        default_factory=dict, max_length=MAX_COLUMNS
    )
    bounds: dict[Column, tuple[Finite, Finite]] = Field(
        default_factory=dict, max_length=MAX_COLUMNS
    )
    quantiles: list[Finite] = Field(default_factory=lambda: [0.25, 0.5, 0.75], max_length=99)
    histogram_bins: Count = Field(default=50, ge=1, le=MAX_BINS - 1)
    dp_mode: Literal["distributed", "central"] = "distributed"
    dp_mechanism: Literal["gaussian", "laplace"] = "gaussian"
    min_cell_count: Count = Field(default=10, ge=1, le=100_000)

    @field_validator("quantiles")
    @classmethod
    def _probabilities(cls, value: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in value):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        return value

    @field_validator("variables", "group_by")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a column is listed twice")
        return value

    @field_validator("levels")
    @classmethod
    def _level_lists(cls, value: dict[str, list[int | str]]) -> dict[str, list[int | str]]:
        for name, levels in value.items():
            if len(set(levels)) != len(levels):
                raise ValueError(f"{name}: a level is listed twice")
        return value

    @model_validator(mode="after")
    def _sum_size(self) -> StatsSpec:
        cells = 1
        for g in self.group_by:
            cells *= max(1, len(self.levels.get(g, [])))
        hist = bool({"histogram", "quantile"} & set(self.measures))
        width = (len(self.bins) or self.histogram_bins + 1) + 1 if hist else 0
        entries = cells * (1 + len(self.variables) * (3 + width)) + 1
        if entries > MAX_SUM_ENTRIES:
            raise ValueError(
                f"the job's secure sum would hold {entries:,} entries "
                f"(cells x variables x bins); at most {MAX_SUM_ENTRIES:,}"
            )
        return self


class GlmSpec(_Strict):
    """Settings of a ``kind = "glm"`` job (Newton-Raphson / IRLS).

    The model is a ``formula`` (``lbw ~ bmi_pre + C(parity, Treatment(reference=1))``,
    :mod:`federation.analytics.formula` says what it may hold), or the job's features
    with ``categorical`` naming each categorical feature's reference level. ``levels``
    declares a categorical column's public levels (else the data model's categories).
    ``weights`` names a column of frequency weights. ``bounds`` gives a public (low,
    high) range per numeric column (else the data model's declared range); with
    ``y_bound`` (a bound on ``|y|``) it sizes the public scale that brings every node's
    summed statistics into SecAgg+'s range.
    """

    family: Literal["binomial", "gaussian", "poisson"] = "binomial"
    formula: str | None = Field(default=None, min_length=3, max_length=2000)
    weights: Column | None = None
    # categorical feature -> its reference level (one of its declared levels)
    categorical: dict[Column, Level] = Field(default_factory=dict, max_length=MAX_COLUMNS)
    levels: dict[Column, Annotated[list[Level], Field(max_length=MAX_LEVELS)]] = Field(
        default_factory=dict, max_length=MAX_COLUMNS
    )
    max_iterations: Count = Field(default=25, ge=1, le=200)
    tolerance: Finite = Field(default=1e-10, gt=0, lt=1)
    min_events_per_parameter: Count = Field(default=10, ge=0, le=10_000)
    bounds: dict[Column, tuple[Finite, Finite]] = Field(
        default_factory=dict, max_length=MAX_COLUMNS
    )
    y_bound: Finite = Field(default=1.0, gt=0, le=1e9)

    @field_validator("levels")
    @classmethod
    def _distinct_levels(cls, value: dict[str, list[int | str]]) -> dict[str, list[int | str]]:
        for name, levels in value.items():
            if len(set(levels)) != len(levels):
                raise ValueError(f"{name}: a level is listed twice")
        return value

    @field_validator("formula")
    @classmethod
    def _checked_formula(cls, value: str | None) -> str | None:
        if value is not None:
            from federation.analytics.formula import parse_formula

            try:
                parse_formula(value)
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix("glm.formula: ")) from None
        return value

    @model_validator(mode="after")
    def _formula_or_categorical(self) -> GlmSpec:
        if self.formula is not None and self.categorical:
            raise ValueError("categorical: with a formula, write C(column) in it instead")
        return self


class LinkSpec(_Strict):
    """Cross-holder linkage (a ``[link]`` table): the job's columns lie at different holders.

    The holders' rows are aligned on ``key`` (``subject``, the consortium pseudonym; or
    ``mother`` for infant records) by private set intersection, and the statistics or the
    GLM are computed by secure multiparty computation over the linked cohort (the inner
    join). Columns may be qualified ``domain.column`` where a name is ambiguous.
    """

    key: Literal["subject", "mother"] = "subject"


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
        complete_case: nodes keep only complete rows and report the counts (stats, glm).
    """

    kind: Literal["train", "stats", "glm"]
    name: str = Field(default="job", min_length=1, max_length=128)
    domain: str = Field(default="births", pattern=r"^[a-z_]{1,32}$")
    features: list[str] = Field(default_factory=list, max_length=MAX_COLUMNS)
    label: str | None = None
    model: str = Field(default="logreg", max_length=64)
    rounds: Count = Field(default=5, ge=1, le=1000)
    seed: Count = Field(default=0, ge=0, le=2**31 - 1)
    nodes: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]] = Field(
        default_factory=list, max_length=MAX_NODES
    )
    min_nodes: Count = Field(default=2, ge=1, le=MAX_NODES)
    purpose: PurposeSpec = Field(default_factory=PurposeSpec)
    privacy: PrivacySpec | None = None
    secure_aggregation: SecureAggregationSpec = Field(default_factory=SecureAggregationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)  # train jobs
    stats: StatsSpec = Field(default_factory=StatsSpec)
    glm: GlmSpec = Field(default_factory=GlmSpec)
    link: LinkSpec | None = None
    complete_case: bool = False

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _QUALIFIED.match(name):
                raise ValueError(f"{name!r} is not a column name (letters, digits, _)")
        if len(set(value)) != len(value):
            raise ValueError("features repeat a column")
        return value

    @field_validator("label")
    @classmethod
    def _label_name(cls, value: str | None) -> str | None:
        if value is not None and not _QUALIFIED.match(value):
            raise ValueError(f"{value!r} is not a column name (letters, digits, _)")
        return value

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if has_controls(value):  # a newline in a name could forge a log line
            raise ValueError("control characters, line breaks and direction overrides are refused")
        return value

    @field_validator("model")
    @classmethod
    def _registered_model(cls, value: str) -> str:
        from federation.models import model_names

        if value not in model_names():
            raise ValueError(f"unknown model {value!r}; known: {', '.join(model_names())}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _formula_columns(cls, data: Any) -> Any:
        """Fill ``label`` and ``features`` from a GLM formula (and its weights column)."""
        if not isinstance(data, dict) or data.get("kind") != "glm":
            return data
        glm = data.get("glm")
        if not isinstance(glm, dict):
            return data
        text, weights = glm.get("formula"), glm.get("weights")
        if not isinstance(text, str):
            return data
        from federation.analytics.formula import parse_formula

        try:
            formula = parse_formula(text)
        except ValueError:
            return data  # the formula's own validator names what is wrong
        reads = formula.columns + ([weights] if isinstance(weights, str) else [])
        out = dict(data)
        out.setdefault("label", formula.label)
        out.setdefault("features", reads)
        if out["label"] != formula.label:
            raise ValueError(f"label: {out['label']!r} is not the formula's outcome")
        if not isinstance(out["features"], list) or set(out["features"]) != set(reads):
            raise ValueError(f"features: with a formula, leave them out (it reads {reads})")
        return out

    @model_validator(mode="after")
    def _kind_rules(self) -> JobSpec:
        if self.complete_case and (self.kind == "train" or self.link is not None):
            raise ValueError("complete_case: only stats and glm jobs without [link] take it")
        if self.kind in ("train", "glm"):
            if not self.features:
                raise ValueError("features: a train or glm job needs at least one feature")
            if self.label is None:
                raise ValueError("label: a train or glm job needs a label")
            if self.label in self.features:
                raise ValueError("label: the label is also listed as a feature")
        if self.link is None:
            qualified = [c for c in self.columns() if not _NAME.match(c)]
            if qualified:
                raise ValueError(
                    f"link: qualified columns {qualified} need a [link] table (linked job)"
                )
        elif self.kind == "train":
            raise ValueError("link: only stats and glm jobs can be linked")
        elif self.glm.formula is not None or self.glm.weights is not None:
            raise ValueError("link: a linked glm takes features, not a formula or weights")
        elif self.kind == "stats" and self.privacy and self.stats.dp_mechanism == "laplace":
            raise ValueError(
                "stats.dp_mechanism: linked statistics add Gaussian noise inside the secure "
                "computation (no laplace)"
            )
        elif self.kind == "stats" and {"histogram", "quantile"} & set(self.stats.measures):
            raise ValueError("link: linked statistics have no histograms or quantiles")
        if self.kind == "train" and self.privacy is None:
            raise ValueError("privacy: a train job needs a [privacy] table (epsilon, delta)")
        if self.kind == "glm" and self.privacy and self.glm.family == "poisson":
            raise ValueError(
                "privacy: a DP GLM is binomial or gaussian (poisson weights are unbounded)"
            )
        if self.kind == "train" and self.privacy and self.privacy.max_rows_per_subject != 1:
            raise ValueError(
                "privacy.max_rows_per_subject: DP-SGD bounds one row per resident; must be 1"
            )
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
            dp_mechanism=self.dp_mechanism(),
            exact_releases=self.exact_releases(),
            secure_aggregation=self.secure_aggregation.enabled,
            rounds=self.rounds if self.kind == "train" else 1,
            linked=self.link is not None,
        )

    def dp_mechanism(self) -> DpMechanism | None:
        """Return the DP mechanism this job runs at the nodes, or None when none runs.

        ``dp_sgd`` for training, the statistics' mechanism (``discrete_gaussian`` in the
        distributed mode), ``discrete_gaussian`` for a GLM (distributed noise on every
        iteration's sums) and for a linked job (every party's secret share of noise inside
        the secure computation); None without a ``[privacy]`` table.
        """
        if self.privacy is None:
            return None
        if self.kind == "train":
            return "dp_sgd"
        if self.link is not None:  # shares of noise inside the secure computation
            return "discrete_gaussian"
        if self.kind == "stats":
            distributed = self.stats.dp_mode == "distributed"
            return "discrete_gaussian" if distributed else self.stats.dp_mechanism
        return "discrete_gaussian"

    def exact_releases(self) -> tuple[str, ...]:
        """Return what the job releases without DP noise (a train job's exact evaluation)."""
        from federation.evaluation_dp import EvaluationRelease

        exact = self.kind == "train" and EvaluationRelease.for_job(self, 1).noise is None
        return ("evaluation",) if exact else ()

    def columns(self) -> list[str]:
        """Return every data column the job reads (features, label, stats variables, groups)."""
        cols = dict.fromkeys(self.features)
        extra = [self.label] if self.label else []
        extra += self.stats.variables + self.stats.group_by if self.kind == "stats" else []
        extra += [self.glm.weights] if self.kind == "glm" and self.glm.weights else []
        cols.update(dict.fromkeys(extra))
        return list(cols)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts) or "spec"


def _too_deep(data: Any, limit: int) -> str | None:
    """Return the field under which ``data`` nests deeper than ``limit``, or None."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(data, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            return ".".join(p[:64] for p in path[:4]) or "spec"
        if isinstance(value, dict):
            stack.extend((v, depth + 1, (*path, str(k))) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, path) for v in value if isinstance(v, dict | list))
    return None


def parse_job_spec(data: dict[str, Any]) -> JobSpec:
    """Validate a job spec given as a mapping.

    Returns:
        The validated :class:`JobSpec`.

    Raises:
        JobSpecError: naming the first offending field and why (a spec nested deeper than
            :data:`MAX_DEPTH` names the field it nests under).
    """
    deep = _too_deep(data, MAX_DEPTH)
    if deep is not None:
        raise JobSpecError(deep, f"nested deeper than {MAX_DEPTH} levels of tables or arrays")
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
    except UnicodeDecodeError:
        raise JobSpecError("spec", f"{path.name} is not UTF-8 text") from None
    return parse_job_spec(
        read_spec_text(text, "json" if path.suffix == ".json" else "toml", path.name)
    )


def read_spec_text(text: str, fmt: Literal["toml", "json"], source: str = "spec") -> dict[str, Any]:
    """Parse a spec's TOML or JSON text into a mapping (not yet validated).

    Returns:
        The parsed tables.

    Raises:
        JobSpecError: field ``spec``: the text is malformed, nests too deeply for the parser,
            or is not a table at the top.
    """
    try:
        data = json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise JobSpecError("spec", f"{source} is not valid {fmt.upper()}: {exc}") from None
    except RecursionError:
        raise JobSpecError(
            "spec", f"{source} nests tables or arrays deeper than {MAX_DEPTH} levels"
        ) from None
    if not isinstance(data, dict):
        raise JobSpecError("spec", f"{source} is not a table of fields")
    return data


def check_finite(name: str, value: float) -> float:
    """Return ``value`` when finite.

    Raises:
        JobSpecError: ``value`` is NaN or infinite.
    """
    if not math.isfinite(value):
        raise JobSpecError(name, "must be a finite number")
    return value
