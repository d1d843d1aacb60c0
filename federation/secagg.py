"""Our thin layer over Flower's SecAgg+: settings from the job, range checks, halts that raise.

Flower's :class:`SecAggPlusWorkflow` does the protocol (Bell et al. 2020); this module
only (1) derives its parameters from the job (``max_weight``, clipping and quantisation
ranges sized for the number of nodes so the modular sum cannot overflow), (2) gives the
client a range check so nothing is silently clipped, and (3) turns a halted protocol
(a node lost during key set-up) into :class:`SecureAggregationHalted` instead of a
round that quietly kept the old model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.errors import SecureAggregationError, ValueRangeError, bounded_reason

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.server import Grid

    from federation.spec import JobSpec

__all__ = [
    "MODULUS_RANGE",
    "SecAggSettings",
    "SecureAggregationHalted",
    "check_range",
    "make_workflow",
    "num_shares_for",
    "quantization_range_for",
]

#: Flower's mask modulus (a power of two, at most 2**32).
MODULUS_RANGE = 2**32


class SecureAggregationHalted(SecureAggregationError):
    """The SecAgg+ protocol stopped before unmasking; the round produced nothing."""

    def __init__(
        self,
        stage: str,
        active: int,
        sampled: int,
        causes: Sequence[str] = (),
        dropped: Sequence[int] = (),
    ) -> None:
        self.stage = stage
        self.active = active
        self.sampled = sampled
        self.causes = list(causes)
        #: Flower node ids sampled for the round that failed or never answered.
        self.dropped = sorted(dropped)
        detail = f" ({bounded_reason('; '.join(sorted(set(self.causes))))})" if self.causes else ""
        super().__init__(
            f"secure aggregation halted in stage {stage!r}: "
            f"{active} of {sampled} nodes still active{detail}"
        )


def quantization_range_for(n_nodes: int, modulus_range: int = MODULUS_RANGE) -> int:
    """Return the largest power-of-two quantisation range whose sum over nodes cannot wrap.

    Each node's quantised entry lies in [0, q]; the modular sum of ``n_nodes`` of them (and of
    their quantised weights) must stay below ``modulus_range``.

    Raises:
        ValueError: ``n_nodes`` < 1 or too many nodes for the modulus.
    """
    if n_nodes < 1:
        raise ValueError("n_nodes must be at least 1")
    bits = math.floor(math.log2((modulus_range - 1) / (n_nodes + 1)))
    if bits < 8:
        raise ValueError(f"{n_nodes} nodes leave fewer than 8 bits of quantisation")
    return int(2 ** min(bits, 30))


#: Below this many nodes every node shares its keys with every other (the original
#: SecAgg's complete graph: the cost is small and no neighbour-graph argument is needed).
ALL_SHARE_BELOW = 20


def num_shares_for(n_nodes: int) -> int:
    """Return how many nodes (itself included) each node shares its key secrets with.

    SecAgg+ (Bell et al., CCS 2020) replaces SecAgg's complete graph by a sparse
    neighbour graph of degree k = O(log n): a node agrees pairwise masks with, and
    secret-shares its mask seeds among, its k - 1 neighbours only, so a round costs
    O(n log n) key agreements and shares instead of O(n²). The sum stays hidden from the
    server as long as (a) the graph of surviving honest nodes stays connected, otherwise
    the server could learn the partial sum of a cut-off group, and (b) fewer than the
    reconstruction threshold t of any honest node's neighbours collude with the server,
    otherwise they could rebuild both its seeds and unmask it alone. Bell et al. choose k
    so that (a) and (b) fail with negligible probability for their assumed fractions of
    dropped and corrupt nodes; the neighbour graph must be random and unknown in advance.

    What Flower 1.42 implements: the server shuffles the node order and joins each node
    to the (k - 1) / 2 nodes on either side of it in that ring (a circulant graph, always
    connected; cutting it takes two separate runs of (k - 1) / 2 consecutive lost nodes).
    The shuffle is done by the server, so the argument holds for an honest-but-curious
    coordinator, not one that picks the order to isolate a node; that is the threat
    model we already state for SecAgg+ (the coordinator follows the protocol).

    Derivation: every node (k = n) below :data:`ALL_SHARE_BELOW` nodes; above it the odd
    k = max(3, 2·ceil(log2 n) + 1), e.g. 13 at 50 nodes, 17 at 200, 21 at 1,000. With a
    third of the nodes lost or corrupt, one cut of the ring at 1,000 nodes
    (10 consecutive losses) has probability about 1000·3⁻¹⁰ ≈ 0.017, and disconnecting
    it needs two. This is a sizing rule, not a proof: a deployment with more corrupt or
    dropping nodes than that should raise k (``SecAggSettings(num_shares=...)``).

    Raises:
        ValueError: ``n_nodes`` < 2.
    """
    if n_nodes < 2:
        raise ValueError("n_nodes must be at least 2")
    if n_nodes < ALL_SHARE_BELOW:
        return n_nodes
    k = max(3, 2 * math.ceil(math.log2(n_nodes)) + 1)
    return n_nodes if k >= n_nodes else k


@dataclass(frozen=True)
class SecAggSettings:
    """SecAgg+ parameters for one job.

    Attributes:
        n_nodes: nodes expected in each round.
        max_weight: upper bound of any node's example count (the weight of its update).
        clipping_range: largest absolute value of any entry after weighting.
        quantization_range: integer range each entry is quantised into.
        reconstruction_threshold: fraction of a node's shares needed to unmask it.
        num_shares: nodes (itself included) each node shares its secrets with; None derives
            it from ``n_nodes`` with :func:`num_shares_for`; equal to ``n_nodes`` means all.
        timeout: seconds each stage waits for replies.
        max_retries: how often a halted round is tried again before the job fails.
    """

    n_nodes: int
    max_weight: int
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    reconstruction_threshold: float = 0.6
    timeout: float = 30.0
    max_retries: int = 2
    num_shares: int | None = None

    def __post_init__(self) -> None:
        if self.n_nodes < 2:
            raise ValueError(
                f"n_nodes: secure aggregation needs at least 2 nodes, got {self.n_nodes}"
            )
        if self.max_weight < 1:
            raise ValueError(f"max_weight: must be >= 1, got {self.max_weight}")
        if not (self.clipping_range > 0 and math.isfinite(self.clipping_range)):
            raise ValueError(
                f"clipping_range: must be a positive number, got {self.clipping_range}"
            )
        if self.n_nodes * self.quantization_range >= MODULUS_RANGE:
            raise ValueError("quantization_range: the sum over nodes would wrap the modulus")
        if not 0 < self.reconstruction_threshold <= 1:
            raise ValueError("reconstruction_threshold: must be in (0, 1]")
        k = self.num_shares
        if k is not None and not min(3, self.n_nodes) <= k <= self.n_nodes:
            raise ValueError(
                f"num_shares: must be between 3 and n_nodes ({self.n_nodes}), got {self.num_shares}"
            )

    @property
    def shares(self) -> int:
        """Return k, the nodes (itself included) each node shares its secrets with."""
        k = self.num_shares if self.num_shares is not None else num_shares_for(self.n_nodes)
        # Flower's ring needs an odd k: (k - 1) / 2 neighbours on each side.
        return k if k >= self.n_nodes or k % 2 else min(k + 1, self.n_nodes)

    @property
    def threshold(self) -> int:
        """Return t, the shares of a node's secrets needed to rebuild them (2 <= t <= k).

        As Flower computes it: ``round(reconstruction_threshold * k)``, at least 2.
        """
        return min(self.shares, max(2, round(self.reconstruction_threshold * self.shares)))

    @classmethod
    def for_job(
        cls,
        n_nodes: int,
        max_records: int,
        clipping_range: float = 8.0,
        reconstruction_threshold: float = 0.6,
        timeout: float = 30.0,
        max_retries: int = 2,
    ) -> SecAggSettings:
        """Derive settings for ``n_nodes`` nodes of at most ``max_records`` examples each.

        ``max_weight`` is the next power of two at or above ``max_records`` (so it reveals
        only the order of magnitude of the largest node).

        Returns:
            The settings.

        Raises:
            ValueError: fewer than 2 nodes, or a non-positive record bound.
        """
        if max_records < 1:
            raise ValueError(f"max_records: must be >= 1, got {max_records}")
        return cls(
            n_nodes=n_nodes,
            max_weight=int(2 ** math.ceil(math.log2(max_records))),
            clipping_range=float(clipping_range),
            quantization_range=quantization_range_for(n_nodes),
            reconstruction_threshold=reconstruction_threshold,
            timeout=timeout,
            max_retries=max_retries,
        )

    @classmethod
    def from_spec(cls, spec: JobSpec, n_nodes: int, max_weight: int) -> SecAggSettings | None:
        """Derive a job's settings from its ``[secure_aggregation]`` table, or None when off.

        ``max_weight`` bounds the weight any node gives its update: its record count for
        training, 1 for a secure sum (statistics, GLM). The table's clipping range,
        reconstruction threshold, stage timeout and retries are taken as the spec says.

        Returns:
            The settings, or None when the spec turns secure aggregation off.

        Raises:
            ValueError: fewer than 2 nodes, or a non-positive weight bound.
        """
        sa = spec.secure_aggregation
        if not sa.enabled:
            return None
        return cls.for_job(
            n_nodes,
            max_weight,
            clipping_range=sa.clipping_range,
            reconstruction_threshold=sa.reconstruction_threshold,
            timeout=sa.timeout,
            max_retries=sa.max_retries,
        )

    @property
    def resolution(self) -> float:
        """Return the quantisation step of one entry (2 × clipping range / quantisation range)."""
        return 2 * self.clipping_range / self.quantization_range

    def summary(self, retried_rounds: int = 0) -> dict[str, float | int]:
        """Return the settings a report shows, with how many rounds were retried."""
        return {
            "max_weight": self.max_weight,
            "clipping_range": self.clipping_range,
            "quantization_range": self.quantization_range,
            "resolution": self.resolution,
            "timeout_s": self.timeout,
            "retried_rounds": retried_rounds,
        }

    def as_config(self) -> dict[str, float | int]:
        """Return the values a client needs for its range check (sent in the fit config)."""
        return {"secagg.clipping_range": self.clipping_range, "secagg.max_weight": self.max_weight}


def check_range(
    arrays: Sequence[np.ndarray], num_examples: int, clipping_range: float, max_weight: float
) -> None:
    """Check on the client that an update can be securely summed without silent clipping.

    Raises:
        ValueRangeError: the weight exceeds ``max_weight``, an entry is NaN/inf, or an entry
            exceeds ``clipping_range`` in absolute value.
    """
    if num_examples > max_weight:
        raise ValueRangeError(
            f"num_examples {num_examples} exceeds the job's max_weight {max_weight:g}"
        )
    for i, arr in enumerate(arrays):
        if not np.isfinite(arr).all():
            raise ValueRangeError(f"array {i} contains NaN or infinity")
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        if peak > clipping_range:
            raise ValueRangeError(
                f"array {i} has |value| {peak:.4g} above the clipping range {clipping_range:g}"
            )


def _node_error(failure: BaseException) -> str:
    """Return a node's error reason, without Flower's and Ray's framing."""
    err = failure.args[0] if failure.args else failure
    text = str(getattr(err, "reason", None) or failure)
    # Flower frames a ClientApp's exception as "<class ...>:<'\nException E occurred.
    # Message: ...'>", and Ray may add a traceback or escape the newlines: the node's own
    # message runs from "Message: " to the first line end or to the closing "'>".
    found = re.search(r"Message: (.*?)(?:\\n|\n|'>\s*\Z|'\)\s*\Z|\Z)", text, re.S)
    if found and found.group(1).strip():
        return bounded_reason(found.group(1))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return bounded_reason(lines[-1] if lines else type(failure).__name__)


def make_workflow(settings: SecAggSettings) -> Any:
    """Return a SecAgg+ fit workflow that raises :class:`SecureAggregationHalted` on a halt.

    Returns:
        A callable ``(grid, context) -> None`` for one round.
    """
    from flwr.server import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

    class _RaisingSecAggPlusWorkflow(SecAggPlusWorkflow):
        """Flower's SecAgg+ workflow whose halt raises instead of returning quietly."""

        def __call__(self, grid: Grid, context: Context) -> None:
            if not isinstance(context, LegacyContext):
                raise TypeError("the SecAgg+ workflow runs in a LegacyContext")
            state = WorkflowState()
            shared: set[int] = set()
            steps = (
                ("setup", self.setup_stage),
                ("share keys", self.share_keys_stage),
                ("collect masked vectors", self.collect_masked_vectors_stage),
                ("unmask", self.unmask_stage),
            )
            for name, step in steps:
                if name == "unmask":
                    # Flower asks the survivors for the key shares of every sampled node
                    # that is not active, but a node lost before its shares were forwarded
                    # (setup or share keys) never entered anyone's mask and left no shares:
                    # asking for them fails the round for everyone (a KeyError on each
                    # node). Only the nodes whose shares went out can be dropouts.
                    state.sampled_node_ids = set(shared)
                if not step(grid, context, state):
                    raise SecureAggregationHalted(
                        name,
                        len(state.active_node_ids),
                        len(state.nid_to_proxies),
                        [_node_error(f) for f in state.failures],
                        sorted(set(state.nid_to_proxies) - set(state.active_node_ids)),
                    )
                if name == "share keys":
                    shared = set(state.active_node_ids)

    k, t = settings.shares, settings.threshold
    everyone = k >= settings.n_nodes
    return _RaisingSecAggPlusWorkflow(
        # 1.0 is Flower's "every sampled node"; an int is a fixed neighbour count k.
        num_shares=1.0 if everyone else int(k),
        reconstruction_threshold=(
            float(settings.reconstruction_threshold) if everyone or t >= k else int(t)
        ),
        max_weight=float(settings.max_weight),
        clipping_range=float(settings.clipping_range),
        quantization_range=int(settings.quantization_range),
        modulus_range=MODULUS_RANGE,
        timeout=settings.timeout,
    )
