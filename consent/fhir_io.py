"""Read FHIR R5 ``Consent`` resources (one, or a Bundle) into models, and write them back.

Mapping (everything else in a provision is refused rather than silently ignored, since
ignoring a restriction would widen what a consent permits):

* ``Consent.subject`` = ``Patient/<pseudonym>``; ``Consent.decision`` absent = ``deny``.
* When a version was recorded: the extension :data:`RECORDED_AT_URL` (``valueDateTime``),
  else ``meta.lastUpdated``, else ``Consent.date`` at 00:00 UTC.
* ``provision.purpose``: DUO codings (:data:`DUO_SYSTEM`, short names or ``DUO:`` ids)
  and, for ``DS``, disease codings (:data:`MONDO_SYSTEM` or :data:`ICD10_SYSTEM`).
* ``provision.actor.role`` coding from :data:`REQUESTER_TYPE_SYSTEM` = requester type;
  ``provision.actor.reference`` = ``Organization/<id>`` = requester organisation.
* ``provision.code`` codings from :data:`DOMAIN_SYSTEM` = data domains.
* ``provision.action`` codings (``use``, ``access``, ``collect``, ...): a provision whose
  actions include neither ``use`` nor ``access`` never matches a secondary use.
* ``provision.period`` and ``provision.dataPeriod`` as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from fhir.resources.bundle import Bundle
from fhir.resources.consent import Consent as FhirConsent
from pydantic import ValidationError

from consent.duo import DUO_IDS, normalise_code
from consent.errors import ConsentImportError, ImportProblem
from consent.model import Consent, Period, Provision, utc

__all__ = [
    "DOMAIN_SYSTEM",
    "DUO_SYSTEM",
    "ICD10_SYSTEM",
    "MONDO_SYSTEM",
    "RECORDED_AT_URL",
    "REQUESTER_TYPE_SYSTEM",
    "consent_from_fhir",
    "consent_to_fhir",
    "consents_to_bundle",
    "read_fhir_consents",
]

DUO_SYSTEM = "http://purl.obolibrary.org/obo/duo"
MONDO_SYSTEM = "http://purl.obolibrary.org/obo/mondo"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
DOMAIN_SYSTEM = "https://hamanasu.example/fhir/CodeSystem/data-domain"
REQUESTER_TYPE_SYSTEM = "https://hamanasu.example/fhir/CodeSystem/requester-type"
ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"
RECORDED_AT_URL = "https://hamanasu.example/fhir/StructureDefinition/consent-recorded-at"
_UNSUPPORTED = ("securityLabel", "documentType", "resourceType", "data", "expression")


class _BadElementError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "resource"


def _period(raw: Mapping[str, Any] | None, field: str) -> Period | None:
    if not raw:
        return None
    try:
        return Period(start=_dt(raw.get("start")), end=_dt(raw.get("end"), end=True))
    except (ValidationError, ValueError) as exc:
        raise _BadElementError(field, str(exc).splitlines()[-1]) from None


def _dt(value: Any, end: bool = False) -> datetime | None:
    if value is None:
        return None
    text = str(value)
    if len(text) == 10:  # a FHIR date: the whole day
        d = date.fromisoformat(text)
        return datetime.combine(d, time.max if end else time.min, tzinfo=UTC)
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _provision(raw: Mapping[str, Any], field: str) -> Provision:
    for name in _UNSUPPORTED:
        if raw.get(name):
            raise _BadElementError(
                f"{field}.{name}", "not supported by this node; refusing rather than ignoring"
            )
    actor_types: list[str] = []
    actor_orgs: list[str] = []
    for i, actor in enumerate(raw.get("actor") or []):
        where = f"{field}.actor[{i}]"
        ref = (actor.get("reference") or {}).get("reference")
        codings = (actor.get("role") or {}).get("coding") or []
        if not ref and not codings:
            raise _BadElementError(where, "an actor needs a role or a reference")
        for c in codings:
            actor_types.append(str(c.get("code")))
        if ref:
            if not str(ref).startswith("Organization/"):
                raise _BadElementError(f"{where}.reference", "must be Organization/<id>")
            actor_orgs.append(str(ref).split("/", 1)[1])
    purposes: list[str] = []
    diseases: list[str] = []
    for i, coding in enumerate(raw.get("purpose") or []):
        system, code = coding.get("system"), str(coding.get("code") or "")
        where = f"{field}.purpose[{i}]"
        if system in (MONDO_SYSTEM, ICD10_SYSTEM):
            diseases.append(code if system == MONDO_SYSTEM else f"ICD10:{code}")
        elif system in (None, DUO_SYSTEM):
            try:
                purposes.append(normalise_code(code))
            except ValueError as exc:
                raise _BadElementError(where, str(exc)) from None
        else:
            raise _BadElementError(f"{where}.system", f"unsupported purpose code system {system!r}")
    domains: list[str] = []
    for i, concept in enumerate(raw.get("code") or []):
        for j, coding in enumerate(concept.get("coding") or []):
            if coding.get("system") != DOMAIN_SYSTEM:
                where = f"{field}.code[{i}].coding[{j}].system"
                raise _BadElementError(where, f"must be {DOMAIN_SYSTEM}")
            domains.append(str(coding.get("code")))
    actions = [str(c.get("code")) for a in raw.get("action") or [] for c in a.get("coding") or []]
    children = tuple(
        _provision(child, f"{field}.provision[{i}]")
        for i, child in enumerate(raw.get("provision") or [])
    )
    try:
        return Provision(
            period=_period(raw.get("period"), f"{field}.period"),
            actor_types=tuple(dict.fromkeys(actor_types)),
            actor_orgs=tuple(dict.fromkeys(actor_orgs)),
            purposes=tuple(purposes),
            diseases=tuple(dict.fromkeys(diseases)),
            domains=tuple(dict.fromkeys(domains)),
            data_period=_period(raw.get("dataPeriod"), f"{field}.dataPeriod"),
            actions=tuple(dict.fromkeys(actions)),
            provisions=children,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _BadElementError(f"{field}.{_loc(err['loc'])}".rstrip("."), err["msg"]) from None


def consent_from_fhir(resource: Mapping[str, Any], version: int = 1) -> Consent:
    """Return the consent a FHIR R5 ``Consent`` resource describes.

    Raises:
        ConsentImportError: the resource is not valid FHIR R5 or cannot be mapped (the
            problem names the element).

    """
    problems = _problems_of(resource, "resource")
    if problems:
        raise ConsentImportError("resource", problems)
    return _map(resource, version)


def _problems_of(resource: Any, location: str) -> list[ImportProblem]:
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Consent":
        return [ImportProblem(location=location, field="resourceType", reason="must be Consent")]
    try:
        FhirConsent.model_validate(dict(resource))
    except ValidationError as exc:
        return [
            ImportProblem(location=location, field=_loc(e["loc"]), reason=e["msg"])
            for e in exc.errors()
        ]
    try:
        _map(resource, 1)
    except _BadElementError as bad:
        return [ImportProblem(location=location, field=bad.field, reason=bad.reason)]
    return []


def _recorded_at(resource: Mapping[str, Any]) -> datetime:
    for ext in resource.get("extension") or []:
        if ext.get("url") == RECORDED_AT_URL:
            if "valueDateTime" not in ext:
                raise _BadElementError(
                    "extension.valueDateTime", "recorded-at extension needs valueDateTime"
                )
            return _dt(ext["valueDateTime"])  # type: ignore[return-value]
    last = (resource.get("meta") or {}).get("lastUpdated")
    if last:
        return _dt(last)  # type: ignore[return-value]
    if resource.get("date"):
        return _dt(resource["date"])  # type: ignore[return-value]
    raise _BadElementError("date", "required: when the consent was recorded")


def _map(resource: Mapping[str, Any], version: int) -> Consent:
    if not resource.get("id"):
        raise _BadElementError("id", "required (the consent's logical id)")
    ref = str((resource.get("subject") or {}).get("reference") or "")
    if not ref.startswith("Patient/"):
        raise _BadElementError("subject.reference", "required, as Patient/<pseudonym>")
    provisions = tuple(
        _provision(p, f"provision[{i}]") for i, p in enumerate(resource.get("provision") or [])
    )
    try:
        return Consent.model_validate(
            {
                "id": resource["id"],
                "subject": ref.split("/", 1)[1],
                "status": resource.get("status"),
                "decision": resource.get("decision") or "deny",
                "period": _period(resource.get("period"), "period"),
                "provisions": provisions,
                "recorded_at": _recorded_at(resource),
                "version": version,
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _BadElementError(_loc(err["loc"]), err["msg"]) from None


def read_fhir_consents(path: Path) -> list[Consent]:
    """Read every Consent of a JSON file holding one resource or a Bundle.

    Returns:
        The consents in file order.

    Raises:
        ConsentImportError: the file is unreadable, or any entry is bad; every bad entry
            is listed (``entry[3]``, element, reason) and nothing is returned.

    """
    source = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConsentImportError(
            source, [ImportProblem(location="file", field="-", reason=f"not readable JSON: {exc}")]
        ) from None
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        entries = data.get("entry") or []
        if not isinstance(entries, list):
            entries = []
        pairs = [(f"entry[{i}]", (e or {}).get("resource")) for i, e in enumerate(entries)]
        if not pairs:
            raise ConsentImportError(
                source, [ImportProblem(location="bundle", field="entry", reason="no entries")]
            )
    else:
        pairs = [("resource", data)]
    problems: list[ImportProblem] = []
    for location, resource in pairs:
        problems.extend(_problems_of(resource, location))
    if problems:
        raise ConsentImportError(source, problems)
    return [_map(resource, 1) for _, resource in pairs if resource is not None]


def _period_out(period: Period | None) -> dict[str, str] | None:
    if period is None:
        return None
    out = {}
    if period.start is not None:
        out["start"] = period.start.isoformat().replace("+00:00", "Z")
    if period.end is not None:
        out["end"] = period.end.isoformat().replace("+00:00", "Z")
    return out


def _provision_out(p: Provision) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.period is not None:
        out["period"] = _period_out(p.period)
    actors: list[dict[str, Any]] = [
        {"role": {"coding": [{"system": REQUESTER_TYPE_SYSTEM, "code": t}]}} for t in p.actor_types
    ]
    actors += [{"reference": {"reference": f"Organization/{o}"}} for o in p.actor_orgs]
    if actors:
        out["actor"] = actors
    purposes: list[dict[str, Any]] = [
        {"system": DUO_SYSTEM, "code": c, "display": DUO_IDS[c]} for c in p.purposes
    ]
    for d in p.diseases:
        if d.upper().startswith("ICD10:"):
            purposes.append({"system": ICD10_SYSTEM, "code": d.split(":", 1)[1]})
        else:
            purposes.append({"system": MONDO_SYSTEM, "code": d})
    if purposes:
        out["purpose"] = purposes
    if p.domains:
        out["code"] = [{"coding": [{"system": DOMAIN_SYSTEM, "code": d}]} for d in p.domains]
    if p.data_period is not None:
        out["dataPeriod"] = _period_out(p.data_period)
    if p.actions:
        out["action"] = [{"coding": [{"system": ACTION_SYSTEM, "code": a}]} for a in p.actions]
    if p.provisions:
        out["provision"] = [_provision_out(c) for c in p.provisions]
    return out


def consent_to_fhir(consent: Consent) -> dict[str, Any]:
    """Return ``consent`` as a FHIR R5 ``Consent`` resource (JSON-ready dict).

    Returns:
        The resource, validated against fhir.resources' R5 model.

    """
    recorded = consent.recorded_at.isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {
        "resourceType": "Consent",
        "id": consent.id,
        "meta": {"versionId": str(consent.version)},
        "extension": [{"url": RECORDED_AT_URL, "valueDateTime": recorded}],
        "status": consent.status.value,
        "subject": {"reference": f"Patient/{consent.subject}"},
        "date": consent.recorded_at.date().isoformat(),
        "decision": consent.decision.value,
    }
    if consent.period is not None:
        out["period"] = _period_out(consent.period)
    if consent.provisions:
        out["provision"] = [_provision_out(p) for p in consent.provisions]
    FhirConsent.model_validate(out)
    return out


def consents_to_bundle(consents: Sequence[Consent], history: bool = False) -> dict[str, Any]:
    """Return a FHIR R5 Bundle (``collection``, or ``history`` with every version).

    Returns:
        The Bundle as a JSON-ready dict, validated against fhir.resources' R5 model.

    """
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history" if history else "collection",
        "entry": [
            {
                "fullUrl": f"urn:hamanasu:consent:{c.id}:{c.version}",
                "resource": consent_to_fhir(c),
                **({"request": {"method": "PUT", "url": f"Consent/{c.id}"}} if history else {}),
                **({"response": {"status": "200"}} if history else {}),
            }
            for c in consents
        ],
    }
    Bundle.model_validate(bundle)
    return bundle
