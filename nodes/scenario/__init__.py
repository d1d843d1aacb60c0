"""Synthetic Iwamizawa scenario: a seeded generator of every holder's data and consents."""

from nodes.scenario.births import LbwModel
from nodes.scenario.generator import NodeManifest, ScenarioManifest, build_births, generate
from nodes.scenario.presets import PRESETS, Preset, get_preset
from nodes.scenario.pseudonyms import derive_scenario_key, pseudonymize

__all__ = [
    "LbwModel",
    "NodeManifest",
    "PRESETS",
    "Preset",
    "ScenarioManifest",
    "build_births",
    "derive_scenario_key",
    "generate",
    "get_preset",
    "pseudonymize",
]
