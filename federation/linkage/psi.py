"""Private set intersection of the holders' pseudonyms (openmined-psi, ECDH, blinded points).

Alignment runs in rounds between an *anchor* holder (the outcome's holder) and every
other holder; only serialized protocol messages travel (blinded elliptic-curve points and
a compressed filter of blinded points), relayed by whoever carries the bytes:

1. **Size-only round**: for each other holder, the anchor learns only the size of the
   pairwise intersection. The sizes are published so that every holder checks its own
   minimum cohort before any holder learns a single member.
2. **Revealing round** (forward): the anchor intersects with each holder in turn, its own
   set shrinking to the running intersection; at the end it holds the linked cohort.
3. **Backward round**: each other holder, as PSI client, intersects its set with the
   anchor's cohort, so it learns which of *its own* residents are in the cohort and
   nothing else.

Each returned intersection is checked: indices unique and in range, the revealed size
equal to the size-only answer, and the backward answer equal to the cohort's size (the
cohort is a subset of every holder's set). Set sizes are public.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from federation.linkage.errors import LinkageError, LinkageRefusal

__all__ = [
    "FPR",
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
    """The server role over a fixed set of pseudonyms (one protocol run per instance)."""

    def __init__(self, items: Sequence[str], *, reveal: bool) -> None:
        self._psi = _psi()
        self._items = list(items)
        self._server = self._psi.server.CreateWithNewKey(reveal)  # type: ignore[attr-defined]

    def setup(self, client_size: int) -> bytes:
        """Return the serialized setup message (a filter of this set's blinded points)."""
        ds = self._psi.DataStructure.GCS  # type: ignore[attr-defined]
        msg = self._server.CreateSetupMessage(FPR, max(client_size, 1), self._items, ds)
        return bytes(msg.SerializeToString())

    def respond(self, request: bytes) -> bytes:
        """Return the serialized response to a client's serialized request.

        Raises:
            LinkageError: the request is not a valid PSI request.

        """
        req = self._psi.Request()  # type: ignore[attr-defined]
        try:
            req.ParseFromString(request)
            return bytes(self._server.ProcessRequest(req).SerializeToString())
        except Exception as exc:  # the C++ layer raises plain RuntimeError
            raise LinkageError(f"malformed PSI request: {type(exc).__name__}") from None


class PsiClient:
    """The client role over a fixed set of pseudonyms (one protocol run per instance)."""

    def __init__(self, items: Sequence[str], *, reveal: bool) -> None:
        self._psi = _psi()
        self._items = list(items)
        self._client = self._psi.client.CreateWithNewKey(reveal)  # type: ignore[attr-defined]

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


def align_cohort(holders: Sequence[PsiHolder], relay: Relay | None = None) -> AlignmentResult:
    """Align the holders' residents by PSI; the first holder is the anchor.

    ``relay(sender, receiver, payload)`` carries one message and returns it as delivered
    (the coordinator's relay in a deployment; identity by default).

    Returns:
        The :class:`AlignmentResult` (cohort per holder, public pair sizes, bytes sent).

    Raises:
        LinkageRefusal: ``cohort_too_small`` (a pairwise size or the cohort under some
            holder's minimum), or fewer than two holders.
        LinkageError: a message or an answer failed its check.

    """
    if len(holders) < 2:
        raise LinkageRefusal("too_few_holders", "linkage needs at least two holders")
    send = relay or _direct
    sent: dict[str, int] = {h.name: 0 for h in holders}

    def carry(sender: str, receiver: str, payload: bytes) -> bytes:
        sent[sender] += len(payload)
        return send(sender, receiver, payload)

    anchor, others = holders[0], list(holders[1:])
    items = {h.name: _unique(h) for h in holders}
    pair_sizes: dict[str, int] = {}
    for h in others:  # size-only round: nobody learns a member yet
        client = PsiClient(items[anchor.name], reveal=False)
        server = PsiServer(items[h.name], reveal=False)
        req = carry(anchor.name, h.name, client.request())
        setup = carry(h.name, anchor.name, server.setup(client.size))
        resp = carry(h.name, anchor.name, server.respond(req))
        pair_sizes[h.name] = client.intersection_size(setup, resp)
        _check_min(holders, pair_sizes[h.name], f"the overlap of {anchor.name} and {h.name}")
    running = items[anchor.name]
    for h in others:  # forward revealing round: the anchor's set shrinks to the cohort
        client = PsiClient(running, reveal=True)
        server = PsiServer(items[h.name], reveal=True)
        req = carry(anchor.name, h.name, client.request())
        setup = carry(h.name, anchor.name, server.setup(client.size))
        resp = carry(h.name, anchor.name, server.respond(req))
        found = client.intersection(setup, resp)
        if running is items[anchor.name] and len(found) != pair_sizes[h.name]:
            raise LinkageError(
                f"PSI with {h.name}: revealed {len(found)} members, size round said "
                f"{pair_sizes[h.name]}"
            )
        running = found
    _check_min(holders, len(running), "the linked cohort")
    cohort = {anchor.name: sorted(running)}
    for h in others:  # backward round: each holder learns its own members of the cohort
        client = PsiClient(items[h.name], reveal=True)
        server = PsiServer(cohort[anchor.name], reveal=True)
        req = carry(h.name, anchor.name, client.request())
        setup = carry(anchor.name, h.name, server.setup(client.size))
        resp = carry(anchor.name, h.name, server.respond(req))
        mine = client.intersection(setup, resp)
        if len(mine) != len(running):
            raise LinkageError(
                f"PSI backward round with {h.name}: {len(mine)} members, the cohort has "
                f"{len(running)}"
            )
        cohort[h.name] = mine
    return AlignmentResult(cohort=cohort, pair_sizes=pair_sizes, bytes_sent=sent)
