"""Private set intersection of the holders' pseudonyms (openmined-psi, ECDH, blinded points).

Alignment runs in rounds between an *anchor* holder (the outcome's holder) and every
other holder; only serialized protocol messages travel (blinded elliptic-curve points and
a compressed filter of blinded points), relayed by whoever carries the bytes:

1. **Size-only round**: for each other holder, the anchor learns only the size of the
   pairwise intersection (the holder's response is shuffled). The sizes are published
   so that every holder checks its own minimum cohort before any holder learns a
   single member.
2. **Revealing round** (forward): the anchor intersects with each holder in turn, its own
   set shrinking to the running intersection; at the end it holds the linked cohort.
3. **Backward round**: each other holder, as PSI client, intersects its set with the
   anchor's cohort, so it learns which of *its own* residents are in the cohort and
   nothing else.

Each returned intersection is checked: indices unique and in range, the revealed size
equal to the size-only answer, and the backward answer equal to the cohort's size (the
cohort is a subset of every holder's set). Set sizes are public.

Cost. Every step is one elliptic-curve operation per element, done in batch by
openmined-psi (one request, setup or response per set). The anchor's request is
blinded once and serves the size-only and the revealing round (the holder answers it
twice, shuffled then in order, with one key and one setup message; the ordered answer is
held back until every size is checked); later forward requests are subsets of the same
blinded points. With large sets each holder's steps run in a process of its own
(:mod:`federation.linkage.psi_roles`), queued so that the holders compute at the same
time: at 100,000 pseudonyms a side, two holders do five batches each, on two cores.
The filter is GCS, the smallest setup message; Bloom and raw setups cost about the same
CPU (``bench/linkage_bench.py`` measures all three) and all give the exact intersection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.linkage.errors import LinkageError, LinkageRefusal

__all__ = [
    "FPR",
    "PARALLEL_MIN_ITEMS",
    "AlignmentResult",
    "PsiClient",
    "PsiHolder",
    "PsiServer",
    "align_cohort",
]

#: False-positive rate of the server's filter over the whole client set.
FPR = 1e-9


def _psi() -> object:
    import private_set_intersection.python as psi

    return psi


class PsiServer:
    """The server role over a fixed set of pseudonyms.

    ``key`` (private key bytes, never sent) reuses a key, so that a setup message made
    once serves a size-only and a revealing response to the same request.
    """

    def __init__(self, items: Sequence[str], *, reveal: bool, key: bytes | None = None) -> None:
        self._psi = _psi()
        self._items = list(items)
        self._reveal = reveal
        srv = self._psi.server  # type: ignore[attr-defined]
        self._server = srv.CreateWithNewKey(reveal) if key is None else srv.CreateFromKey(
            key, reveal)

    @property
    def key(self) -> bytes:
        """Return this role's private key bytes (to reuse it; never to be sent)."""
        return bytes(self._server.GetPrivateKeyBytes())

    def setup(self, client_size: int) -> bytes:
        """Return the serialized setup message (a filter of this set's blinded points)."""
        ds = self._psi.DataStructure.GCS  # type: ignore[attr-defined]
        msg = self._server.CreateSetupMessage(FPR, max(client_size, 1), self._items, ds)
        return bytes(msg.SerializeToString())

    def respond(self, request: bytes) -> bytes:
        """Return the serialized response to a client's serialized request.

        A size-only server answers a revealing request as a size-only one (shuffled).

        Raises:
            LinkageError: the request is not a valid PSI request.

        """
        req = self._psi.Request()  # type: ignore[attr-defined]
        try:
            req.ParseFromString(request)
            if not self._reveal:
                req.reveal_intersection = False
            return bytes(self._server.ProcessRequest(req).SerializeToString())
        except Exception as exc:  # the C++ layer raises plain RuntimeError
            raise LinkageError(f"malformed PSI request: {type(exc).__name__}") from None


class PsiClient:
    """The client role over a fixed set of pseudonyms (``key`` as for :class:`PsiServer`)."""

    def __init__(self, items: Sequence[str], *, reveal: bool, key: bytes | None = None) -> None:
        self._psi = _psi()
        self._items = list(items)
        cli = self._psi.client  # type: ignore[attr-defined]
        self._client = cli.CreateWithNewKey(reveal) if key is None else cli.CreateFromKey(
            key, reveal)

    @property
    def key(self) -> bytes:
        """Return this role's private key bytes (to reuse it; never to be sent)."""
        return bytes(self._client.GetPrivateKeyBytes())

    @property
    def size(self) -> int:
        """Return this set's size (public)."""
        return len(self._items)

    def request(self) -> bytes:
        """Return the serialized request (this set's blinded points)."""
        return bytes(self._client.CreateRequest(self._items).SerializeToString())

    def _parse(self, setup: bytes, response: bytes) -> tuple[object, object]:
        s = self._psi.ServerSetup()  # type: ignore[attr-defined]
        r = self._psi.Response()  # type: ignore[attr-defined]
        try:
            s.ParseFromString(setup)
            r.ParseFromString(response)
        except Exception as exc:
            raise LinkageError(f"malformed PSI message: {type(exc).__name__}") from None
        got = len(r.encrypted_elements)
        if got != len(self._items):
            raise LinkageError(f"PSI response carries {got} points for {len(self._items)} asked")
        return s, r

    def intersection_size(self, setup: bytes, response: bytes) -> int:
        """Return the intersection's size.

        Raises:
            LinkageError: malformed messages or a size outside ``[0, len(set)]``.

        """
        s, r = self._parse(setup, response)
        try:
            size = int(self._client.GetIntersectionSize(s, r))
        except Exception as exc:
            raise LinkageError(f"PSI size round failed: {type(exc).__name__}") from None
        if not 0 <= size <= len(self._items):
            raise LinkageError(f"PSI returned an impossible size {size}")
        return size

    def intersection(self, setup: bytes, response: bytes) -> list[str]:
        """Return the members of this set that are in the server's set (sorted).

        Raises:
            LinkageError: malformed messages, or indices out of range or repeated.

        """
        s, r = self._parse(setup, response)
        try:
            idx = [int(i) for i in self._client.GetIntersection(s, r)]
        except Exception as exc:
            raise LinkageError(f"PSI revealing round failed: {type(exc).__name__}") from None
        if len(set(idx)) != len(idx) or any(not 0 <= i < len(self._items) for i in idx):
            raise LinkageError("PSI returned indices out of range or repeated")
        return sorted(self._items[i] for i in idx)


@dataclass
class PsiHolder:
    """One holder's side of the alignment: its consenting pseudonyms and its minimum cohort."""

    name: str
    items: Sequence[str]
    min_cohort: int = 0


@dataclass
class AlignmentResult:
    """What the alignment produced.

    Attributes:
        cohort: per holder, its own pseudonyms in the linked cohort (sorted: the same
            order at every holder, which aligns the rows for the computation).
        pair_sizes: public size-only answers, anchor with each other holder.
        bytes_sent: per holder, protocol bytes it sent.

    """

    cohort: dict[str, list[str]]
    pair_sizes: dict[str, int]
    bytes_sent: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Return the linked cohort's size."""
        return len(next(iter(self.cohort.values()))) if self.cohort else 0


Relay = Callable[[str, str, bytes], bytes]


def _direct(_sender: str, _receiver: str, payload: bytes) -> bytes:
    return payload


def _check_min(holders: Sequence[PsiHolder], size: int, what: str) -> None:
    for h in holders:
        if size < h.min_cohort:
            raise LinkageRefusal(
                "cohort_too_small",
                f"{what} has {size} residents, fewer than {h.name}'s minimum {h.min_cohort}",
            )


def _unique(holder: PsiHolder) -> list[str]:
    items = [str(x) for x in holder.items]
    if len(set(items)) != len(items):
        raise LinkageError(f"{holder.name}: a linkage key occurs more than once")
    return items


#: Sets at least this large run each holder's PSI steps in a process of its own.
PARALLEL_MIN_ITEMS = 5_000


def align_cohort(holders: Sequence[PsiHolder], relay: Relay | None = None, *,
                 parallel: bool | None = None) -> AlignmentResult:
    """Align the holders' residents by PSI; the first holder is the anchor.

    ``relay(sender, receiver, payload)`` carries one message and returns it as delivered
    (the coordinator's relay in a deployment; identity by default). With ``parallel``
    (default: when a set has :data:`PARALLEL_MIN_ITEMS` or more) every holder's steps
    run in a process of its own, so that holders compute at the same time.

    Returns:
        The :class:`AlignmentResult` (cohort per holder, public pair sizes, bytes sent).

    Raises:
        LinkageRefusal: ``cohort_too_small`` (a pairwise size or the cohort under some
            holder's minimum), or fewer than two holders.
        LinkageError: a message or an answer failed its check.

    """
    from federation.linkage.psi_roles import InlineRole, ProcessRole

    if len(holders) < 2:
        raise LinkageRefusal("too_few_holders", "linkage needs at least two holders")
    send = relay or _direct
    sent: dict[str, int] = {h.name: 0 for h in holders}

    def carry(sender: str, receiver: str, payload: bytes) -> bytes:
        sent[sender] += len(payload)
        return send(sender, receiver, payload)

    items = {h.name: _unique(h) for h in holders}
    if parallel is None:
        parallel = max(len(v) for v in items.values()) >= PARALLEL_MIN_ITEMS
    make = ProcessRole if parallel else InlineRole
    roles: dict[str, Any] = {}
    try:
        for h in holders:
            roles[h.name] = make(items[h.name])
        cohort, pair_sizes = _align(holders, items, roles, carry)
    except BaseException:
        for r in roles.values():
            r.close(abort=True)
        raise
    for r in roles.values():
        r.close()
    return AlignmentResult(cohort=cohort, pair_sizes=pair_sizes, bytes_sent=sent)


def _align(holders: Sequence[PsiHolder], items: dict[str, list[str]], roles: dict[str, Any],
           carry: Relay) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Run the rounds; steps are queued early so that the holders' roles overlap.

    Keys are reused where that reveals nothing more: the anchor's request (blinded once)
    and each holder's setup serve both the size-only and the revealing response, and a
    later holder's forward request is a subset of the same blinded points. The holders'
    backward requests are blinded while the anchor works. With two holders the linked
    cohort is the pairwise intersection, so the backward round can serve the anchor's
    whole set (its setup made while the anchor would wait) instead of the cohort.
    """
    anchor, others = holders[0], list(holders[1:])
    a, first = roles[anchor.name], others[0].name
    mirror = len(others) == 1
    t_req = a.submit("request", "forward")
    t_setup = {h.name: roles[h.name].submit("setup", "forward", len(items[anchor.name]))
               for h in others}
    t_mirror = a.submit("setup", "backward", len(items[first])) if mirror else None
    req = a.get(t_req)
    t_size_resp, t_back_req = {}, {}
    for h in others:  # size-only responses first, then what can be done meanwhile
        r = roles[h.name]
        t_size_resp[h.name] = r.submit("respond", "forward", carry(anchor.name, h.name, req),
                                       False)
        t_back_req[h.name] = r.submit("request", "backward")
    t_reveal = roles[first].submit("respond", "forward", req, True)  # held until checked
    setups, t_size = {}, {}
    for h in others:
        r = roles[h.name]
        setups[h.name] = carry(h.name, anchor.name, r.get(t_setup[h.name]))
        resp = carry(h.name, anchor.name, r.get(t_size_resp[h.name]))
        t_size[h.name] = a.submit("size", "forward", setups[h.name], resp)
    pair_sizes: dict[str, int] = {}
    for h in others:  # nobody has learnt a member yet
        pair_sizes[h.name] = int(a.get(t_size[h.name]))
        _check_min(holders, pair_sizes[h.name], f"the overlap of {anchor.name} and {h.name}")
    if mirror:
        back_req = carry(first, anchor.name, roles[first].get(t_back_req[first]))
        t_back_resp = a.submit("respond", "backward", back_req, True)
    t_fwd = a.submit("intersect", "forward", setups[first],
                     carry(first, anchor.name, roles[first].get(t_reveal)))
    t_mine: dict[str, int] = {}
    if mirror:
        back_setup = carry(anchor.name, first, a.get(t_mirror))
        t_mine[first] = roles[first].submit(
            "intersect", "backward", back_setup, carry(anchor.name, first, a.get(t_back_resp)))
    running = list(a.get(t_fwd))
    if len(running) != pair_sizes[first]:
        raise LinkageError(f"PSI with {first}: revealed {len(running)} members, size round "
                           f"said {pair_sizes[first]}")
    index = {x: i for i, x in enumerate(items[anchor.name])}
    for h in others[1:]:  # the anchor's set shrinks to the cohort
        subset = [index[x] for x in running]
        sub = carry(anchor.name, h.name, a.get(a.submit("request", "forward", subset)))
        r = roles[h.name]
        resp = carry(h.name, anchor.name, r.get(r.submit("respond", "forward", sub, True)))
        running = list(a.get(a.submit("intersect", "forward", setups[h.name], resp, subset)))
    _check_min(holders, len(running), "the linked cohort")
    cohort = {anchor.name: sorted(running)}
    if not mirror:  # each other holder learns its own members of the cohort
        biggest = max(len(items[h.name]) for h in others)
        back_setup = a.get(a.submit("setup", "backward", biggest,
                                    [index[x] for x in running]))
        t_back = {h.name: a.submit("respond", "backward", carry(
            h.name, anchor.name, roles[h.name].get(t_back_req[h.name])), True) for h in others}
        for h in others:
            t_mine[h.name] = roles[h.name].submit(
                "intersect", "backward", carry(anchor.name, h.name, back_setup),
                carry(anchor.name, h.name, a.get(t_back[h.name])))
    for h in others:
        mine = list(roles[h.name].get(t_mine[h.name]))
        if len(mine) != len(running):
            raise LinkageError(f"PSI backward round with {h.name}: {len(mine)} members, the "
                               f"cohort has {len(running)}")
        cohort[h.name] = mine
    return cohort, pair_sizes
