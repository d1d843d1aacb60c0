"""Scenario presets: which holders, years, facilities and sizes a scenario has."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nodes.scenario import calibration as cal

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """The shape of one synthetic scenario.

    Attributes:
        name: ``iwamizawa`` or ``hokkaido``.
        description: one line for the manifest.
        years: the default years.
        lbw_targets: expected LBW rate by year.
        newborns: expected newborns by year.
        facilities: the maternity facilities (each a births holder).
        facility_weights: relative delivery volume of each facility.
        city_domains: whether the city, insurer, drugstore and dairy holders exist.
        id_prefix: prefix of the synthetic resident ids (never written to any file).

    """

    name: str
    description: str
    years: tuple[int, ...]
    lbw_targets: Mapping[int, float]
    newborns: Mapping[int, float]
    facilities: tuple[str, ...]
    facility_weights: tuple[float, ...] = field(default=())
    city_domains: bool = False
    id_prefix: str = "R"


_IWA_YEARS = tuple(range(2013, 2026))
_N_HOKKAIDO_FACILITIES = 60

PRESETS: Mapping[str, Preset] = {
    "iwamizawa": Preset(
        name="iwamizawa",
        description="Iwamizawa city consortium: two maternity facilities, city, insurer, "
        "drugstore, dairy; ~420 births a year",
        years=_IWA_YEARS,
        lbw_targets=dict(cal.IWAMIZAWA_LBW_TARGETS),
        newborns={y: 440.0 - 5.0 * (y - 2013) for y in _IWA_YEARS},
        facilities=("city-hospital", "women-clinic"),
        facility_weights=(0.58, 0.42),
        city_domains=True,
        id_prefix="IWA",
    ),
    "hokkaido": Preset(
        name="hokkaido",
        description="Hokkaido-wide births: 60 maternity facilities, ~32,000 births a year",
        years=_IWA_YEARS,
        lbw_targets={y: cal.HOKKAIDO_LBW_RATE for y in _IWA_YEARS},
        newborns={y: 32_000.0 for y in _IWA_YEARS},
        facilities=tuple(f"facility-{i:02d}" for i in range(1, _N_HOKKAIDO_FACILITIES + 1)),
        id_prefix="HKD",
    ),
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``.

    Raises:
        ValueError: no such preset (the message lists the presets).

    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"preset: {name!r} is not a preset; use one of {', '.join(sorted(PRESETS))}"
        ) from None
