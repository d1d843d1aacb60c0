"""PSI alignment: the cohort is the intersection, every holder learns only its own members."""

from __future__ import annotations

import pytest

from federation.linkage.errors import LinkageError, LinkageRefusal
from federation.linkage.psi import AlignmentResult, PsiClient, PsiHolder, PsiServer, align_cohort


def _ids(prefix: str, rng: range) -> list[str]:
    return [f"{prefix}{i:05d}" for i in rng]


def test_cohort_is_the_intersection_of_all_holders() -> None:
    a = _ids("s", range(0, 120))
    b = _ids("s", range(40, 200)) + _ids("only-b-", range(30))
    c = _ids("s", range(60, 110)) + _ids("only-c-", range(5))
    seen: list[tuple[str, str, bytes]] = []

    def relay(sender: str, receiver: str, payload: bytes) -> bytes:
        seen.append((sender, receiver, payload))
        return payload

    res = align_cohort(
        [PsiHolder("hospital", a), PsiHolder("dairy", b), PsiHolder("drugstore", c)], relay
    )
    want = sorted(set(a) & set(b) & set(c))
    assert res.size == len(want) == 50
    assert res.cohort == {"hospital": want, "dairy": want, "drugstore": want}
    assert res.pair_sizes == {"dairy": 80, "drugstore": 50}
    # Only blinded protocol bytes travel: no pseudonym appears in any relayed message.
    blob = b"".join(p for _, _, p in seen)
    assert not any(x.encode() in blob for x in a + b + c)
    assert sum(res.bytes_sent.values()) == len(blob)


@pytest.mark.parametrize("n_holders", [2, 3])
def test_holders_in_processes_of_their_own_align_the_same_cohort(n_holders: int) -> None:
    a = _ids("s", range(0, 300))
    b = _ids("s", range(100, 400)) + _ids("only-b-", range(20))
    c = _ids("s", range(150, 260))
    holders = [PsiHolder("a", a), PsiHolder("b", b), PsiHolder("c", c)][:n_holders]
    seen: list[bytes] = []

    def relay(sender: str, receiver: str, payload: bytes) -> bytes:
        seen.append(payload)
        return payload

    res = align_cohort(holders, relay, parallel=True)
    want = sorted(set(a) & set(b) & (set(c) if n_holders == 3 else set(a)))
    assert res.cohort == {h.name: want for h in holders}
    assert res.pair_sizes == ({"b": 200, "c": 110} if n_holders == 3 else {"b": 200})
    blob = b"".join(seen)
    assert not any(x.encode() in blob for x in a + b + c)


def test_a_small_overlap_stops_the_holders_processes_before_anyone_learns_a_member() -> None:
    with pytest.raises(LinkageRefusal, match="fewer than b's minimum 50"):
        align_cohort([PsiHolder("a", _ids("s", range(100))),
                      PsiHolder("b", _ids("s", range(90, 200)), min_cohort=50)], parallel=True)


def test_a_resident_missing_at_one_holder_is_not_linked() -> None:
    a = _ids("s", range(30))
    b = [x for x in a if x != "s00007"]  # withdrawn at the second holder
    res = align_cohort([PsiHolder("a", a), PsiHolder("b", b), PsiHolder("c", a)])
    assert "s00007" not in res.cohort["a"]
    assert res.size == 29


def test_the_size_round_refuses_a_small_overlap_before_anything_is_revealed() -> None:
    a = _ids("s", range(100))
    b = _ids("s", range(95, 300))
    with pytest.raises(LinkageRefusal) as info:
        align_cohort([PsiHolder("a", a), PsiHolder("b", b, min_cohort=10)])
    assert info.value.cause == "cohort_too_small"
    assert "b's minimum 10" in str(info.value)


def test_the_final_cohort_is_checked_against_every_minimum() -> None:
    a = _ids("s", range(100))
    b = _ids("s", range(0, 100, 2))
    c = _ids("s", range(1, 100, 2)) + _ids("s", range(0, 8, 2))
    with pytest.raises(LinkageRefusal, match="the linked cohort has 4 residents"):
        align_cohort([PsiHolder("a", a, 5), PsiHolder("b", b), PsiHolder("c", c)])


def test_duplicate_keys_and_a_single_holder_are_refused() -> None:
    with pytest.raises(LinkageError, match="more than once"):
        align_cohort([PsiHolder("a", ["x", "x"]), PsiHolder("b", ["x"])])
    with pytest.raises(LinkageRefusal, match="at least two holders"):
        align_cohort([PsiHolder("a", ["x"])])


def test_a_tampered_response_fails_its_check() -> None:
    client = PsiClient(_ids("s", range(20)), reveal=True)
    server = PsiServer(_ids("s", range(10, 40)), reveal=True)
    setup = server.setup(client.size)
    resp = server.respond(client.request())
    assert len(client.intersection(setup, resp)) == 10
    with pytest.raises(LinkageError):
        client.intersection(setup, resp[: len(resp) // 2])
    with pytest.raises(LinkageError, match="malformed PSI request"):
        server.respond(b"\x00garbage")


def test_result_size_of_an_empty_alignment() -> None:
    assert AlignmentResult(cohort={}, pair_sizes={}).size == 0
