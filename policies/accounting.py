"""DP mechanisms as the budget ledger records them, and their composition.

Each charge names the mechanism that ran (DP-SGD steps, a Gaussian or Laplace release, an
already-accounted ``pure`` (ε, δ) pair, or several of the first three ``composed`` in one
round, such as DP-SGD steps and the release of an evaluation).

Two accountants, both Google's ``dp_accounting``:

* :func:`compose_epsilon`, the tight one: privacy-loss distributions (PLD,
  ``dp_accounting.pld``, connect-the-dots, pessimistic) of every mechanism, composed
  exactly (identical steps self-composed, then the groups convolved) and read at δ. It is
  an upper bound on the true ε of the composition and, at the discretisation
  :data:`PLD_VALUE_INTERVAL`, within 0.1 % of it on the platform's mechanisms
  (``tests/privacy/test_accounting_crosscheck.py``). Nodes report it, budgets charge it
  per job, and noise is calibrated with it (:func:`calibrate_sigma`).
* :class:`Composition`, the RDP curve at the fixed :data:`RDP_ORDERS` (``pure`` pairs
  added on top), summed in constant time per charge so the ledger can store one curve per
  job and per closed budget period; it bounds the composition of many *jobs* (see
  :mod:`policies.budget`), where a PLD over every mechanism ever charged would be too slow.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import dp_accounting
import numpy as np
from dp_accounting import mechanism_calibration as _calibration
from dp_accounting.pld import common as _pld_common
from dp_accounting.pld import privacy_loss_distribution as _pld
from dp_accounting.rdp import rdp_privacy_accountant as _rdp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from policies.errors import MechanismError

__all__ = [
    "PLD_VALUE_INTERVAL",
    "RDP_ORDERS",
    "ComposedMechanism",
    "Composition",
    "GaussianMechanism",
    "LaplaceMechanism",
    "Mechanism",
    "PureMechanism",
    "SubsampledGaussianMechanism",
    "calibrate_sigma",
    "compose_epsilon",
    "mechanism_json",
    "parse_mechanism",
    "to_dp_event",
]

#: Rényi orders at which curves are kept (dp_accounting's defaults, fixed here so that
#: stored curves stay comparable across library upgrades).
RDP_ORDERS: tuple[float, ...] = tuple(float(o) for o in _rdp.DEFAULT_RDP_ORDERS)
_ORDERS = np.array(RDP_ORDERS, dtype=np.float64)

#: Discretisation of privacy-loss values in the PLD accountant. With connect-the-dots it
#: stays within 0.1 % of a ten times finer grid for DP-SGD jobs of up to thousands of
#: steps, and a whole job composes in about 0.05-0.2 s (1e-4 costs ten times that).
PLD_VALUE_INTERVAL = 1e-3

_Pos = Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubsampledGaussianMechanism(_Strict):
    """DP-SGD: ``steps`` Poisson-subsampled Gaussian steps.

    Attributes:
        noise_multiplier: σ / clipping norm.
        sample_rate: Poisson sampling probability q of each record per step.
        steps: number of noisy steps in this charge.

    """

    type: Literal["subsampled_gaussian"] = "subsampled_gaussian"
    noise_multiplier: _Pos
    sample_rate: float = Field(gt=0, le=1, allow_inf_nan=False)
    steps: int = Field(ge=1, le=10_000_000)


class GaussianMechanism(_Strict):
    """Gaussian noise of standard deviation ``sigma`` on a query of L2 ``sensitivity``.

    Attributes:
        sigma: noise standard deviation.
        sensitivity: L2 sensitivity of the query.
        count: how many such releases this charge covers.

    """

    type: Literal["gaussian"] = "gaussian"
    sigma: _Pos
    sensitivity: _Pos = 1.0
    count: int = Field(default=1, ge=1, le=10_000_000)


class LaplaceMechanism(_Strict):
    """Laplace noise of scale ``scale`` on a query of L1 ``sensitivity`` (ε = sensitivity/scale).

    Attributes:
        scale: Laplace scale b.
        sensitivity: L1 sensitivity of the query.
        count: how many such releases this charge covers.

    """

    type: Literal["laplace"] = "laplace"
    scale: _Pos
    sensitivity: _Pos = 1.0
    count: int = Field(default=1, ge=1, le=10_000_000)


class PureMechanism(_Strict):
    """An (ε, δ) pair accounted elsewhere, composed by adding ε and δ (no RDP curve).

    Attributes:
        epsilon: the ε of the release.
        delta: the δ of the release.

    """

    type: Literal["pure"] = "pure"
    epsilon: float = Field(ge=0, le=1000, allow_inf_nan=False)
    delta: float = Field(default=0.0, ge=0, lt=1, allow_inf_nan=False)


_Part = Annotated[
    SubsampledGaussianMechanism | GaussianMechanism | LaplaceMechanism,
    Field(discriminator="type"),
]


class ComposedMechanism(_Strict):
    """Several mechanisms run in one round (DP-SGD steps and an evaluation release, say).

    Attributes:
        parts: the mechanisms, each accounted as if charged alone (none a pure pair).

    """

    type: Literal["composed"] = "composed"
    parts: list[_Part] = Field(min_length=1, max_length=16)


Mechanism = Annotated[
    SubsampledGaussianMechanism
    | GaussianMechanism
    | LaplaceMechanism
    | PureMechanism
    | ComposedMechanism,
    Field(discriminator="type"),
]
_MECHANISM: TypeAdapter[Any] = TypeAdapter(Mechanism)
_MechanismModel = (
    SubsampledGaussianMechanism
    | GaussianMechanism
    | LaplaceMechanism
    | PureMechanism
    | ComposedMechanism
)


def parse_mechanism(data: Mapping[str, Any] | BaseModel) -> _MechanismModel:
    """Validate a mechanism description.

    Args:
        data: a mapping such as ``{"type": "gaussian", "sigma": 4.0, "sensitivity": 1.0}``,
            or an already-built mechanism model.

    Returns:
        The validated mechanism model.

    Raises:
        MechanismError: the description is malformed; the message names the field
            (``mechanism.sample_rate: ...``).

    """
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        mech: _MechanismModel = _MECHANISM.validate_python(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        if len(loc) > 1:  # drop the union tag pydantic puts first
            loc = loc[1:]
        path = ".".join(["mechanism", *loc]) if loc else "mechanism"
        raise MechanismError(path, str(err["msg"])) from None
    except TypeError:
        raise MechanismError("mechanism", "must be a mapping with a 'type' key") from None
    return mech


def mechanism_json(mech: _MechanismModel) -> str:
    """Return the canonical JSON of a mechanism (sorted keys, defaults written out).

    Returns:
        The JSON text; two equal mechanisms give the same text.

    """
    return json.dumps(mech.model_dump(), sort_keys=True, separators=(",", ":"))


def to_dp_event(mech: _MechanismModel) -> dp_accounting.DpEvent | None:
    """Translate a mechanism into a ``dp_accounting`` event.

    Args:
        mech: the mechanism.

    Returns:
        The event, or ``None`` for a :class:`PureMechanism` (which has no RDP curve).

    """
    if isinstance(mech, SubsampledGaussianMechanism):
        step = dp_accounting.PoissonSampledDpEvent(
            mech.sample_rate, dp_accounting.GaussianDpEvent(mech.noise_multiplier)
        )
        return dp_accounting.SelfComposedDpEvent(step, mech.steps)
    if isinstance(mech, GaussianMechanism):
        event = dp_accounting.GaussianDpEvent(mech.sigma / mech.sensitivity)
        return dp_accounting.SelfComposedDpEvent(event, mech.count)
    if isinstance(mech, LaplaceMechanism):
        lap = dp_accounting.LaplaceDpEvent(mech.scale / mech.sensitivity)
        return dp_accounting.SelfComposedDpEvent(lap, mech.count)
    if isinstance(mech, ComposedMechanism):
        return dp_accounting.ComposedDpEvent([to_dp_event(p) for p in mech.parts])
    return None


@functools.lru_cache(maxsize=4096)
def _rdp_curve(mech_text: str) -> np.ndarray:
    # Keyed by the canonical JSON: DP-SGD rounds of one job repeat the same mechanism, so the
    # (comparatively slow) subsampled-Gaussian curve is computed once per process.
    event = to_dp_event(parse_mechanism(json.loads(mech_text)))
    assert event is not None
    accountant = _rdp.RdpAccountant(list(RDP_ORDERS))
    accountant.compose(event)
    curve = np.asarray(accountant.rdp, dtype=np.float64)
    curve.setflags(write=False)
    return curve


@dataclass(frozen=True)
class Composition:
    """The composition of a set of mechanisms: summed RDP curve plus added pure (ε, δ).

    Attributes:
        rdp: the summed RDP curve at :data:`RDP_ORDERS` (zeros when there is none).
        has_rdp: whether any mechanism with an RDP curve is included.
        pure_epsilon: sum of the pure mechanisms' ε.
        pure_delta: sum of the pure mechanisms' δ.

    """

    rdp: np.ndarray = field(default_factory=lambda: np.zeros(len(RDP_ORDERS)))
    has_rdp: bool = False
    pure_epsilon: float = 0.0
    pure_delta: float = 0.0

    @classmethod
    def of(cls, mech: _MechanismModel) -> Composition:
        """Return the composition of one mechanism.

        Returns:
            Its :class:`Composition`.

        """
        if isinstance(mech, PureMechanism):
            return cls(pure_epsilon=mech.epsilon, pure_delta=mech.delta)
        return cls(rdp=_rdp_curve(mechanism_json(mech)), has_rdp=True)

    def __add__(self, other: Composition) -> Composition:
        return Composition(
            rdp=self.rdp + other.rdp,
            has_rdp=self.has_rdp or other.has_rdp,
            pure_epsilon=self.pure_epsilon + other.pure_epsilon,
            pure_delta=self.pure_delta + other.pure_delta,
        )

    def epsilon(self, delta: float) -> float:
        """Return the composed ε at the given total δ.

        The pure mechanisms' δ is taken off ``delta``; the rest goes to the RDP conversion
        (``dp_accounting``'s ``compute_epsilon``); the pure ε is added to the result.

        Args:
            delta: the total δ the composition is stated at.

        Returns:
            The ε, ``math.inf`` when ``delta`` does not cover the pure δ (or is 0 while an
            RDP mechanism is present).

        """
        rdp_delta = delta - self.pure_delta
        if not self.has_rdp:
            return self.pure_epsilon if rdp_delta >= 0 else math.inf
        if rdp_delta <= 0:
            return math.inf
        eps, _order = _rdp.compute_epsilon(_ORDERS, self.rdp, rdp_delta)
        return float(eps) + self.pure_epsilon

    def to_blob(self) -> bytes:
        """Return the RDP curve as bytes (little-endian float64) for storage.

        Returns:
            The bytes.

        """
        return self.rdp.astype("<f8").tobytes()

    @staticmethod
    def curve_from_blob(blob: bytes | None) -> np.ndarray:
        """Return an RDP curve stored by :meth:`to_blob`.

        Returns:
            The curve (zeros for ``None``).

        """
        if blob is None:
            return np.zeros(len(RDP_ORDERS))
        return np.frombuffer(blob, dtype="<f8").astype(np.float64)


def _unit(mech: _MechanismModel) -> tuple[str, int]:
    """Return one step (or release) of ``mech`` as canonical JSON, and how many it holds."""
    if isinstance(mech, SubsampledGaussianMechanism):
        return mechanism_json(mech.model_copy(update={"steps": 1})), mech.steps
    if isinstance(mech, GaussianMechanism | LaplaceMechanism):
        return mechanism_json(mech.model_copy(update={"count": 1})), mech.count
    return mechanism_json(mech), 1


@functools.lru_cache(maxsize=1024)
def _unit_pld(unit_text: str, times: int) -> _pld.PrivacyLossDistribution:
    """Return the PLD of ``times`` self-composed copies of one step (add/remove one)."""
    mech = parse_mechanism(json.loads(unit_text))
    interval = PLD_VALUE_INTERVAL
    if isinstance(mech, SubsampledGaussianMechanism):
        step = _pld.from_gaussian_mechanism(
            mech.noise_multiplier,
            sampling_prob=mech.sample_rate,
            value_discretization_interval=interval,
        )
        return step.self_compose(times)
    if isinstance(mech, GaussianMechanism):
        # n Gaussian releases compose exactly into one of σ / √n.
        return _pld.from_gaussian_mechanism(
            mech.sigma / mech.sensitivity / math.sqrt(times),
            value_discretization_interval=interval,
        )
    if isinstance(mech, LaplaceMechanism):
        step = _pld.from_laplace_mechanism(
            mech.scale / mech.sensitivity, value_discretization_interval=interval
        )
        return step.self_compose(times)
    assert isinstance(mech, PureMechanism)
    params = _pld_common.DifferentialPrivacyParameters(mech.epsilon, mech.delta)
    pure = _pld.from_privacy_parameters(params, value_discretization_interval=interval)
    return pure.self_compose(times) if times > 1 else pure


@functools.lru_cache(maxsize=1024)
def _groups_epsilon(groups: tuple[tuple[str, int], ...], delta: float) -> float:
    total: _pld.PrivacyLossDistribution | None = None
    for unit_text, times in groups:
        part = _unit_pld(unit_text, times)
        total = part if total is None else total.compose(part)
    if total is None:
        return 0.0
    eps = float(total.get_epsilon_for_delta(delta))
    return eps if math.isfinite(eps) else math.inf


def compose_epsilon(mechanisms: Iterable[Mapping[str, Any] | BaseModel], delta: float) -> float:
    """Compose mechanisms with the PLD accountant and return their ε at ``delta``.

    Identical steps are grouped and self-composed (a job's rounds of DP-SGD are one
    group), the groups are composed, and the result is read at ``delta``; results are
    cached, so a node's report and its ledger's charge cost one computation.

    Args:
        mechanisms: mechanism descriptions (see :func:`parse_mechanism`).
        delta: the total δ.

    Returns:
        The composed ε (0 for no mechanism, ``math.inf`` when ``delta`` cannot cover it).

    Raises:
        MechanismError: a mechanism is malformed.
        ValueError: ``delta`` is not in [0, 1].

    """
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    counts: dict[str, int] = {}
    for mech in mechanisms:
        parsed = parse_mechanism(mech)
        for part in parsed.parts if isinstance(parsed, ComposedMechanism) else [parsed]:
            unit, times = _unit(part)
            counts[unit] = counts.get(unit, 0) + times
    if delta == 0.0 and any('"pure"' not in unit for unit in counts):
        return math.inf
    return _groups_epsilon(tuple(sorted(counts.items())), float(delta))


#: Grid of the first calibration search: close to :data:`PLD_VALUE_INTERVAL`'s ε at a
#: third of its cost (up to 1 % pessimistic at small ε); a second search on the reporting
#: grid, in a narrow bracket, then finishes.
_SEARCH_INTERVAL = 3e-3


def _search(
    event_of: Callable[[float], dp_accounting.DpEvent],
    epsilon: float,
    delta: float,
    interval: float,
    guess: float,
    step: float,
    tol: float,
) -> float:
    """Return log(parameter) meeting ``epsilon`` on one PLD grid (Brent's method, ``tol``)."""

    def accountant() -> dp_accounting.PrivacyAccountant:
        return dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)

    def meets(log_x: float) -> bool:
        return bool(accountant().compose(event_of(log_x)).get_epsilon(delta) <= epsilon)

    # The bracket grows from the guess by ``step`` (in log) and never reaches 0: tiny
    # parameters make huge PLDs.
    low, high = guess - step, guess
    while meets(low):
        low, high = low - step, low
        if low < math.log(1e-6):
            return high
    while not meets(high):
        low, high = high, high + step
        if high > math.log(1e9):
            raise ValueError(f"no noise parameter below 1e9 meets epsilon {epsilon:g}")
    return float(
        _calibration.calibrate_dp_mechanism(
            accountant,
            event_of,
            epsilon,
            delta,
            _calibration.ExplicitBracketInterval(low, high),
            tol=tol,
        )
    )


@functools.lru_cache(maxsize=256)
def _calibrated(
    template: str, epsilon: float, delta: float, guess: float, alongside: str = "[]"
) -> float:
    fixed = [parse_mechanism(m) for m in json.loads(alongside)]
    fixed_events = [e for e in (to_dp_event(m) for m in fixed) if e is not None]

    def mechanism(x: float) -> _MechanismModel:
        return parse_mechanism(json.loads(template.replace('"__x__"', repr(float(x)))))

    def event_of(log_x: float) -> dp_accounting.DpEvent:
        event = to_dp_event(mechanism(math.exp(log_x)))
        assert event is not None
        return dp_accounting.ComposedDpEvent([event, *fixed_events]) if fixed_events else event

    # Over log(parameter): ε is close to a power law in it, so Brent's method needs few steps.
    coarse = _search(event_of, epsilon, delta, _SEARCH_INTERVAL, math.log(guess), math.log(2), 5e-3)
    fine = _search(event_of, epsilon, delta, PLD_VALUE_INTERVAL, coarse, math.log(1.012), 3e-4)
    found = math.exp(fine)
    while compose_epsilon([mechanism(found), *fixed], delta) > epsilon:
        found *= 1.0002
    return found


def calibrate_sigma(
    mechanism: Mapping[str, Any],
    epsilon: float,
    delta: float,
    *,
    guess: float = 1.0,
    alongside: Iterable[Mapping[str, Any]] = (),
) -> float:
    """Return the smallest noise parameter whose PLD ε at ``delta`` is at most ``epsilon``.

    ``dp_accounting.mechanism_calibration.calibrate_dp_mechanism`` (Brent's method, over
    the logarithm of the parameter) with dp_accounting's PLD accountant, first on a
    slightly coarser grid, then on the reporting grid in a narrow bracket; the answer is
    then raised by 0.02 % steps until
    :func:`compose_epsilon` (the ε nodes report and ledgers charge) meets the target.
    Results are cached per (mechanism, ε, δ).

    Args:
        mechanism: the mechanism description with the string ``"__x__"`` in place of the
            noise parameter (a DP-SGD job's ``noise_multiplier``, a Gaussian ``sigma``, a
            Laplace ``scale``); its ε must fall as the parameter grows.
        epsilon: the target ε (> 0).
        delta: the δ the target is stated at (> 0 for Gaussian mechanisms).
        guess: where the search starts.
        alongside: mechanisms (fixed, without placeholder) the job runs besides this one,
            e.g. a training job's evaluation releases beside its DP-SGD steps: the
            composition of all of them meets ``epsilon``.

    Returns:
        The parameter: its reported ε (composed with ``alongside``) is at most
        ``epsilon``, and within about 0.1 % of it.

    Raises:
        ValueError: ``epsilon`` is not positive, or no parameter meets it.

    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    template = json.dumps(dict(mechanism), sort_keys=True)
    if template.count('"__x__"') != 1:
        raise ValueError('mechanism: exactly one value must be the placeholder "__x__"')
    fixed = json.dumps([parse_mechanism(m).model_dump() for m in alongside], sort_keys=True)
    return _calibrated(template, float(epsilon), float(delta), float(guess), fixed)
