"""One plan per job kind, found by kind in a registry: what both engines run."""

from federation.plans.base import JobPlan, PlanInputs, RoundCharge, SumPlan, record_bound
from federation.plans.glm import GlmPlan
from federation.plans.registry import (
    PlanRegistryError,
    plan_for,
    register_plan,
    registered_kinds,
)
from federation.plans.stats import CALIBRATION_MARGIN, StatsPlan
from federation.plans.train import TrainPlan

__all__ = [
    "CALIBRATION_MARGIN",
    "GlmPlan",
    "JobPlan",
    "PlanInputs",
    "PlanRegistryError",
    "RoundCharge",
    "StatsPlan",
    "SumPlan",
    "TrainPlan",
    "plan_for",
    "record_bound",
    "register_plan",
    "registered_kinds",
]
