"""DP mechanisms as the budget ledger records them, and their composition.

Each charge names the mechanism that ran (DP-SGD steps, a Gaussian or Laplace release, or
an already-accounted ``pure`` (ε, δ) pair). Mechanisms with a Rényi-DP curve are composed
with Google's ``dp_accounting`` :class:`~dp_accounting.rdp.RdpAccountant` (RDP curves add
up, then one conversion to (ε, δ) at the end, much tighter than adding ε per step);
``pure`` pairs have no curve and are added on top (basic composition): their δ is taken
off the target δ before the RDP conversion and their ε added after it.

A :class:`Composition` keeps the summed RDP curve (at the fixed :data:`RDP_ORDERS`) so the
ledger can store it and compose thousands of charges in constant time; its
:meth:`Composition.epsilon` equals ``RdpAccountant(RDP_ORDERS)`` composed with the same
events, converted at the same δ.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import dp_accounting
import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant as _rdp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from policies.errors import MechanismError

__all__ = [
    "RDP_ORDERS",
    "Composition",
    "GaussianMechanism",
    "LaplaceMechanism",
    "Mechanism",
    "PureMechanism",
    "SubsampledGaussianMechanism",
    "compose_epsilon",
    "mechanism_json",
    "parse_mechanism",
    "to_dp_event",
]

#: Rényi orders at which curves are kept (dp_accounting's defaults, fixed here so that
#: stored curves stay comparable across library upgrades).
RDP_ORDERS: tuple[float, ...] = tuple(float(o) for o in _rdp.DEFAULT_RDP_ORDERS)
_ORDERS = np.array(RDP_ORDERS, dtype=np.float64)

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


Mechanism = Annotated[
    SubsampledGaussianMechanism | GaussianMechanism | LaplaceMechanism | PureMechanism,
    Field(discriminator="type"),
]
_MECHANISM: TypeAdapter[Any] = TypeAdapter(Mechanism)
_MechanismModel = SubsampledGaussianMechanism | GaussianMechanism | LaplaceMechanism | PureMechanism


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


def compose_epsilon(mechanisms: Iterable[Mapping[str, Any] | BaseModel], delta: float) -> float:
    """Compose mechanisms and return their ε at ``delta``.

    Args:
        mechanisms: mechanism descriptions (see :func:`parse_mechanism`).
        delta: the total δ.

    Returns:
        The composed ε (``math.inf`` when ``delta`` cannot cover it).

    Raises:
        MechanismError: a mechanism is malformed.

    """
    total = Composition()
    for mech in mechanisms:
        total = total + Composition.of(parse_mechanism(mech))
    return total.epsilon(delta)
