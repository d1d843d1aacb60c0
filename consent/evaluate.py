"""Evaluate a use request against a consent: for one subject, or vectorised for many.

Rules (FHIR R5 Consent, with DUO matching from ``consent.duo``):

1. No consent: deny. A consent that is not ``active``, not yet recorded at the time of
   use, or outside its period: deny.
2. Start from the base decision. A provision is an exception: if it matches the request
   it decides the opposite of its parent, unless one of its own nested provisions
   matches and flips it back. Siblings are OR-ed: the first matching sibling whose
   outcome differs from the parent decides; otherwise a matching sibling that was flipped
   back decides; otherwise the parent's decision stands.
3. Attributes within a provision are AND-ed. When the request does not state something a
   provision asks about (domain, data period), a provision that would permit does not
   match and one that would deny does: doubt always falls on refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from consent.duo import (
    DEFAULT_DISEASES,
    USE_CATEGORIES,
    DiseaseHierarchy,
    covers,
    meets_modifier,
    overlaps,
)
from consent.model import (
    Consent,
    ConsentStatus,
    Decision,
    DecisionType,
    Period,
    Provision,
    UseRequest,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["PermittedSource", "evaluate", "evaluate_many", "provision_matches"]


class PermittedSource(Protocol):
    """Anything that answers ``permitted`` for many subjects (a ``ConsentRegistry``)."""

    def permitted(
        self, subjects: Sequence[str], request: UseRequest, at: object = None
    ) -> NDArray[np.bool_]:
        """Return one bool per subject."""
        ...


def provision_matches(
    provision: Provision,
    request: UseRequest,
    outcome: DecisionType,
    diseases: DiseaseHierarchy = DEFAULT_DISEASES,
) -> bool:
    """Return True when ``provision`` applies to ``request``.

    Args:
        provision: the provision.
        request: the use request.
        outcome: what the provision would decide if it matched (sets which way doubt falls).
        diseases: disease hierarchy for ``DS`` matching.

    """
    permit = outcome is DecisionType.PERMIT
    if provision.actions and not {"use", "access"} & set(provision.actions):
        return False
    if provision.period is not None and not provision.period.contains(request.time):
        return False
    if provision.actor_types and request.requester_type not in provision.actor_types:
        return False
    if provision.actor_orgs and request.requester_org not in provision.actor_orgs:
        return False
    if provision.domains and (
        request.domain not in provision.domains if request.domain is not None else permit
    ):
        return False
    if provision.data_period is not None:
        if request.data_period is None:
            if permit:
                return False
        elif (
            not provision.data_period.covers(request.data_period)
            if permit
            else not _overlap(provision.data_period, request.data_period)
        ):
            return False
    if provision.purposes:
        return _purpose_matches(provision, request, permit, diseases)
    return True


def _overlap(a: Period, b: Period) -> bool:
    """Return whether two periods share a moment (open ends reach forever)."""
    if a.end is not None and b.start is not None and b.start > a.end:
        return False
    return not (b.end is not None and a.start is not None and b.end < a.start)


def _purpose_matches(
    provision: Provision, request: UseRequest, permit: bool, diseases: DiseaseHierarchy
) -> bool:
    categories = [c for c in provision.purposes if c in USE_CATEGORIES]
    modifiers = [c for c in provision.purposes if c not in USE_CATEGORIES]
    if permit:
        if categories and not covers(
            categories, provision.diseases, request.codes, request.disease, diseases
        ):
            return False
        return all(
            meets_modifier(m, request.codes, request.commercial, request.requester_type)
            for m in modifiers
        )
    if categories and not overlaps(
        categories, provision.diseases, request.codes, request.disease, diseases
    ):
        return False
    if modifiers:
        return not all(
            meets_modifier(m, request.codes, request.commercial, request.requester_type)
            for m in modifiers
        )
    return True


def _resolve(
    provisions: Sequence[Provision],
    parent: DecisionType,
    path: str,
    request: UseRequest,
    diseases: DiseaseHierarchy,
) -> tuple[DecisionType, str]:
    outcome = parent.flipped()
    flipped_back: tuple[DecisionType, str] | None = None
    for i, provision in enumerate(provisions):
        if not provision_matches(provision, request, outcome, diseases):
            continue
        here = f"{path}.provision[{i}]"
        decided = _resolve(provision.provisions, outcome, here, request, diseases)
        if decided[0] is outcome:
            return decided
        if flipped_back is None:
            flipped_back = decided
    return flipped_back if flipped_back is not None else (parent, path)


def evaluate(
    consent: Consent | None, request: UseRequest, diseases: DiseaseHierarchy = DEFAULT_DISEASES
) -> Decision:
    """Decide whether ``request`` is permitted under ``consent``.

    Args:
        consent: the subject's consent version in force (None: no consent on record).
        request: what, by whom, in which domain, and when.
        diseases: disease hierarchy for ``DS`` matching.

    Returns:
        The decision and the path of the rule that decided it.

    """
    deny = DecisionType.DENY
    if consent is None:
        return Decision(decision=deny, path="none", reason="no consent on record")
    ids: dict[str, Any] = {"consent_id": consent.id, "version": consent.version}
    status = ConsentStatus(consent.status)
    if status is not ConsentStatus.ACTIVE:
        return Decision(
            decision=deny,
            path="consent.status",
            reason=f"consent status is {status.value}",
            **ids,
        )
    if consent.recorded_at > request.time:
        return Decision(
            decision=deny,
            path="consent.recorded_at",
            reason="consent was recorded after the time of use",
            **ids,
        )
    if consent.period is not None and not consent.period.contains(request.time):
        return Decision(
            decision=deny,
            path="consent.period",
            reason="time of use is outside the consent period",
            **ids,
        )
    base = DecisionType(consent.decision)
    decided, path = _resolve(consent.provisions, base, "consent", request, diseases)
    reason = "base decision" if path == "consent" else f"provision {path} applies"
    return Decision(decision=decided, path=path, reason=reason, **ids)


def evaluate_many(
    consents_by_subject: Mapping[str, Consent] | PermittedSource,
    subjects: Sequence[str],
    request: UseRequest,
    diseases: DiseaseHierarchy = DEFAULT_DISEASES,
) -> NDArray[np.bool_]:
    """Decide ``request`` for many subjects at once.

    Subjects whose consents have identical content (status, decision, period,
    provisions) share one evaluation: each distinct consent is evaluated once and the
    results are broadcast.

    Args:
        consents_by_subject: subject -> consent in force, or a registry (then the versions
            in force at ``request.time`` are used).
        subjects: the subjects to decide for; unknown subjects are denied.
        request: the use request.
        diseases: disease hierarchy for ``DS`` matching.

    Returns:
        A bool array, True where the subject's data may be used.

    """
    if not isinstance(consents_by_subject, Mapping):
        return consents_by_subject.permitted(subjects, request, request.time)
    group_of: dict[tuple[str, bool], int] = {}
    representatives: list[Consent] = []
    codes = np.empty(len(subjects), dtype=np.int64)
    get = consents_by_subject.get
    t = request.time
    for i, subject in enumerate(subjects):
        consent = get(subject)
        if consent is None:
            codes[i] = -1
            continue
        key = (consent.content_key, consent.recorded_at <= t)
        g = group_of.get(key)
        if g is None:
            g = group_of[key] = len(representatives)
            representatives.append(consent)
        codes[i] = g
    outcome = np.array(
        [evaluate(c, request, diseases).permitted for c in representatives] + [False], dtype=bool
    )
    return outcome[codes]
