"""The coordinator's persistent state: principals, nodes, jobs, approvals, results, reviews."""

from coordinator.store.base import utc_now
from coordinator.store.facade import Store
from coordinator.store.jobs import RESTART_REASON
from coordinator.store.results import result_hash

__all__ = ["RESTART_REASON", "Store", "result_hash", "utc_now"]
