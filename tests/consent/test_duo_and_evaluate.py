from __future__ import annotations

import csv
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.duo import DiseaseHierarchy, normalise_code
from consent.evaluate import evaluate, evaluate_many, provision_matches
from consent.fhir_io import read_fhir_consents
from consent.model import (
    Consent,
    DecisionType,
    Period,
    Provision,
    Purpose,
    UseRequest,
)

from .conftest import VECTORS

WHEN = datetime(2025, 4, 1, tzinfo=UTC)
DUO_ROWS = list(csv.DictReader((VECTORS / "duo_matching.csv").open()))


def _split(text: str) -> list[str]:
    return [x for x in text.split(";") if x]


@pytest.mark.parametrize(
    "row",
    DUO_ROWS,
    ids=lambda r: (
        "{provision_codes}|{outcome}|{request_codes}|{commercial}|{requester_type}".format(**r)
    ),
)
def test_duo_matching_table(row: dict[str, str]) -> None:
    provision = Provision(
        purposes=_split(row["provision_codes"]), diseases=_split(row["provision_diseases"])
    )
    request = UseRequest(
        codes=_split(row["request_codes"]),
        disease=row["request_disease"] or None,
        commercial=row["commercial"] == "yes",
        requester_type=row["requester_type"],
        time=WHEN,
    )
    outcome = DecisionType(row["outcome"])
    assert provision_matches(provision, request, outcome) is (row["matches"] == "yes")


def test_duo_codes_normalise_from_ids_and_refuse_unknown() -> None:
    assert normalise_code("DUO:0000042") == "GRU"
    assert normalise_code("duo_0000006") == "HMB"
    assert normalise_code(" ncu ") == "NCU"
    with pytest.raises(ValueError, match="unknown DUO code"):
        normalise_code("XYZ")


def test_custom_disease_hierarchy() -> None:
    tree = DiseaseHierarchy(parents={"MONDO:2": ("MONDO:1",), "MONDO:3": ("MONDO:2",)})
    assert tree.is_same_or_descendant("MONDO:3", "MONDO:1")
    assert not tree.is_same_or_descendant("MONDO:1", "MONDO:3")
    p = Provision(purposes=["DS"], diseases=["MONDO:1"])
    req = UseRequest(codes=["DS"], disease="MONDO:3", time=WHEN)
    assert provision_matches(p, req, DecisionType.PERMIT, tree)


def _examples() -> dict[str, Consent]:
    out = {}
    for name in ("permit", "deny", "nested", "expired"):
        (c,) = read_fhir_consents(VECTORS / "fhir" / f"{name}.json")
        out[name] = c
    return out


def req(**kw: object) -> UseRequest:
    base: dict[str, object] = {"codes": ["HMB"], "time": WHEN, "domain": "births"}
    base.update(kw)
    return UseRequest(**base)  # type: ignore[arg-type]


def test_fhir_permit_example() -> None:
    c = _examples()["permit"]
    d = evaluate(c, req())
    assert d.permitted and d.path == "consent.provision[0]" and d.consent_id == "permit-hmb"
    assert not evaluate(c, req(domain="purchases")).permitted  # other domain
    assert not evaluate(c, req(domain=None)).permitted  # unstated domain fails closed
    assert not evaluate(c, req(codes=["GRU"])).permitted  # broader than HMB
    assert evaluate(c, req(codes=["DS"], disease="MONDO:0005148")).permitted
    d = evaluate(c, req(commercial=True, requester_type="commercial"))
    assert not d.permitted and d.path == "consent"  # NCU


def test_fhir_deny_example() -> None:
    d = evaluate(_examples()["deny"], req())
    assert d.decision is DecisionType.DENY and d.path == "consent"


def test_fhir_nested_exception_example() -> None:
    c = _examples()["nested"]
    assert c.recorded_at == datetime(2024, 1, 10, 0, 30, tzinfo=UTC)  # +09:00 normalised
    assert evaluate(c, req()).path == "consent"  # academic: base permit
    com = {"commercial": True, "requester_type": "commercial"}
    d = evaluate(c, req(**com))
    assert not d.permitted and d.path == "consent.provision[0]"
    d = evaluate(c, req(**com, codes=["DS"], disease="MONDO:0005148", domain="dairy_intake"))
    assert d.permitted and d.path == "consent.provision[0].provision[0]"
    # a disease outside diabetes stays denied
    d = evaluate(c, req(**com, codes=["DS"], disease="MONDO:0005044", domain="dairy_intake"))
    assert not d.permitted and d.path == "consent.provision[0]"


def test_fhir_expired_period_example() -> None:
    c = _examples()["expired"]
    d = evaluate(c, req())
    assert not d.permitted and d.path == "consent.period"
    assert evaluate(c, req(time=datetime(2021, 6, 1, tzinfo=UTC))).permitted
    assert evaluate(c, req(time=datetime(2022, 3, 31, 23, 59, tzinfo=UTC))).permitted


def test_no_consent_inactive_and_future_consents_deny() -> None:
    assert evaluate(None, req()).path == "none"
    c = _examples()["deny"].model_copy(update={"decision": DecisionType.PERMIT})
    assert evaluate(c, req()).permitted
    inactive = c.model_copy(update={"status": "inactive"})
    assert evaluate(inactive, req()).path == "consent.status"
    assert evaluate(c, req(time=datetime(2023, 1, 1, tzinfo=UTC))).path == "consent.recorded_at"


def test_siblings_are_ored_and_attributes_anded() -> None:
    c = Consent(
        id="c",
        subject="s1",
        status="active",
        decision="deny",
        recorded_at=datetime(2024, 1, 1),
        provisions=[
            Provision(purposes=["HMB"], domains=["births"], actor_types=["academic"]),
            Provision(purposes=["GRU"], domains=["checkups"]),
        ],
    )
    assert evaluate(c, req()).path == "consent.provision[0]"
    assert not evaluate(c, req(requester_type="public")).permitted  # AND: actor fails
    assert (
        evaluate(c, req(requester_type="public", domain="checkups")).path == "consent.provision[1]"
    )


def test_data_period_fails_closed() -> None:
    c = Consent(
        id="c",
        subject="s1",
        status="active",
        decision="deny",
        recorded_at=datetime(2024, 1, 1),
        provisions=[
            Provision(data_period=Period(start=datetime(2020, 1, 1), end=datetime(2022, 1, 1)))
        ],
    )
    inside = Period(start=datetime(2020, 6, 1), end=datetime(2021, 1, 1))
    outside = Period(start=datetime(2019, 6, 1), end=datetime(2021, 1, 1))
    assert evaluate(c, req(data_period=inside)).permitted
    assert not evaluate(c, req(data_period=outside)).permitted
    assert not evaluate(c, req()).permitted


def test_models_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="DS"):
        Purpose(codes=["DS"])
    with pytest.raises(ValueError, match="commercial"):
        Purpose(codes=["HMB"], requester_type="commercial")
    with pytest.raises(ValueError):
        Provision(purposes=["DS"])  # DS without disease
    with pytest.raises(ValueError):
        Provision(purposes=["MDS"])  # request-only code
    with pytest.raises(ValueError):
        Consent(
            id="c", subject="john@example.com", status="active", decision="permit", recorded_at=WHEN
        )
    with pytest.raises(ValueError):
        Period(start=datetime(2025, 1, 1), end=datetime(2024, 1, 1))


SHAPES = [
    Consent(
        id="a", subject="x", status="active", decision="permit", recorded_at=datetime(2024, 1, 1)
    ),
    Consent(
        id="b", subject="x", status="inactive", decision="permit", recorded_at=datetime(2024, 1, 1)
    ),
    Consent(
        id="c",
        subject="x",
        status="active",
        decision="deny",
        recorded_at=datetime(2024, 1, 1),
        provisions=[Provision(purposes=["HMB", "NCU"], domains=["births"])],
    ),
    Consent(
        id="d", subject="x", status="active", decision="permit", recorded_at=datetime(2026, 1, 1)
    ),
    Consent(
        id="e",
        subject="x",
        status="active",
        decision="permit",
        recorded_at=datetime(2024, 1, 1),
        provisions=[Provision(purposes=["NCU"])],
    ),
]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(-1, len(SHAPES) - 1), min_size=1, max_size=60),
    st.sampled_from(["births", "checkups"]),
    st.booleans(),
)
def test_evaluate_many_equals_evaluate_one_by_one(
    picks: list[int], domain: str, commercial: bool
) -> None:
    consents = {
        f"s{i}": SHAPES[p].model_copy(update={"subject": f"s{i}"})
        for i, p in enumerate(picks)
        if p >= 0
    }
    subjects = [f"s{i}" for i in range(len(picks))] + ["unknown"]
    r = req(
        domain=domain,
        commercial=commercial,
        requester_type="commercial" if commercial else "academic",
    )
    got = evaluate_many(consents, subjects, r)
    want = np.array([evaluate(consents.get(s), r).permitted for s in subjects])
    assert got.dtype == bool and (got == want).all()
