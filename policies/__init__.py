"""Node policies, privacy budgets and disclosure-control rules."""

from policies.accounting import (
    RDP_ORDERS,
    Composition,
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    PureMechanism,
    SubsampledGaussianMechanism,
    compose_epsilon,
    parse_mechanism,
)
from policies.budget_math import period_key
from policies.budget_records import BudgetStatus, Charge, Release, Reservation, UsageLedger
from policies.budget_store import BudgetLedger
from policies.decision import (
    REASON_CODES,
    BudgetRemaining,
    PolicyDecision,
    PolicyLimits,
    PolicyState,
    Reason,
)
from policies.errors import (
    BudgetError,
    BudgetExceeded,
    MechanismError,
    PolicyError,
    ReservationNotFound,
    UsageLedgerError,
)
from policies.evaluate import evaluate, job_limits, manual_approval
from policies.model import (
    NEVER_USABLE_COLUMNS,
    BudgetRule,
    LinkageRules,
    NodePolicy,
    ReleaseRules,
    default_policy,
    is_identifier,
    load_policy,
    loads_policy,
    parse_policy,
    policy_to_toml,
)
from policies.request import JobRequest

__all__ = [
    "BudgetError",
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetRemaining",
    "BudgetRule",
    "BudgetStatus",
    "Charge",
    "Composition",
    "GaussianMechanism",
    "JobRequest",
    "LaplaceMechanism",
    "LinkageRules",
    "Mechanism",
    "MechanismError",
    "NEVER_USABLE_COLUMNS",
    "NodePolicy",
    "PolicyDecision",
    "PolicyError",
    "PolicyLimits",
    "PolicyState",
    "PureMechanism",
    "RDP_ORDERS",
    "REASON_CODES",
    "Reason",
    "Release",
    "ReleaseRules",
    "Reservation",
    "ReservationNotFound",
    "SubsampledGaussianMechanism",
    "UsageLedger",
    "UsageLedgerError",
    "compose_epsilon",
    "default_policy",
    "evaluate",
    "is_identifier",
    "job_limits",
    "load_policy",
    "loads_policy",
    "manual_approval",
    "parse_mechanism",
    "parse_policy",
    "period_key",
    "policy_to_toml",
]
