"""GA4GH Data Use Ontology (DUO) codes and the rules for matching a use against them.

A consent provision lists DUO codes. They come in two sorts:

* **use categories** (``NRES`` ⊃ ``GRU`` ⊃ ``HMB`` ⊃ ``DS``, ``GRU`` ⊃ ``POA``; ``CC``
  clinical care stands apart): which research the data may serve. ``DS`` carries one or
  more diseases (MONDO or ICD-10 strings); a disease-specific request matches ``DS`` when
  its disease is the consented disease or a descendant of it.
* **modifiers** (``NCU``, ``NPU``, ``NPUNCU``, ``IRB``, ``GS``, ``TS``, ``US``, ``PS``,
  ``IS``, ``PUB``, ``COL``, ``RTN``, ``MOR``, ``GSO``, ``NMDS``, ``RS``): conditions the
  use must meet. ``NCU`` refuses commercial use, ``NPU`` refuses for-profit requesters,
  ``NPUNCU`` both, ``NMDS`` refuses methods development (request code ``MDS``); every
  other modifier is an obligation the request must state it accepts by listing the same
  code (``IRB`` = the project has ethics approval, ``PUB`` = results will be published...).

How a provision's codes match a request depends on what the provision would decide, so
that every doubt falls on the side of refusal:

* a provision that would **permit** matches when the request lies *inside* one of its use
  categories (or it lists none) **and** the request meets *every* modifier;
* a provision that would **deny** matches when the request *overlaps* one of its use
  categories (or it lists none) **and**, if it lists modifiers, the request *breaks* one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "ALL_CODES",
    "DUO_IDS",
    "MODIFIERS",
    "NONPROFIT_REQUESTER_TYPES",
    "REQUEST_ONLY_CODES",
    "USE_CATEGORIES",
    "DiseaseHierarchy",
    "covers",
    "meets_modifier",
    "normalise_code",
    "overlaps",
]

#: DUO short names and their ontology identifiers.
DUO_IDS: dict[str, str] = {
    "NRES": "DUO:0000004",
    "GRU": "DUO:0000042",
    "HMB": "DUO:0000006",
    "DS": "DUO:0000007",
    "POA": "DUO:0000011",
    "CC": "DUO:0000043",
    "RS": "DUO:0000012",
    "NMDS": "DUO:0000015",
    "GSO": "DUO:0000016",
    "NPUNCU": "DUO:0000018",
    "PUB": "DUO:0000019",
    "COL": "DUO:0000020",
    "IRB": "DUO:0000021",
    "GS": "DUO:0000022",
    "MOR": "DUO:0000024",
    "TS": "DUO:0000025",
    "US": "DUO:0000026",
    "PS": "DUO:0000027",
    "IS": "DUO:0000028",
    "RTN": "DUO:0000029",
    "NPU": "DUO:0000045",
    "NCU": "DUO:0000046",
}
_BY_ID = {v: k for k, v in DUO_IDS.items()}

#: Codes naming what research a use serves.
USE_CATEGORIES = frozenset({"NRES", "GRU", "HMB", "DS", "POA", "CC"})
#: Codes restricting how, by whom or under which obligations data may be used.
MODIFIERS = frozenset(
    {
        "NCU",
        "NPU",
        "NPUNCU",
        "IRB",
        "GS",
        "TS",
        "US",
        "PS",
        "IS",
        "PUB",
        "COL",
        "RTN",
        "MOR",
        "GSO",
        "NMDS",
        "RS",
    }
)
#: Codes that only a request states: ``MDS`` = the use develops methods.
REQUEST_ONLY_CODES = frozenset({"MDS"})
ALL_CODES = USE_CATEGORIES | MODIFIERS | REQUEST_ONLY_CODES
#: Requester types that count as not-for-profit for ``NPU`` (Japanese medical
#: corporations and public hospitals are non-profit by law, so ``clinical`` counts).
NONPROFIT_REQUESTER_TYPES = frozenset({"academic", "public", "clinical", "nonprofit"})

# category -> categories it contains (reflexive)
_CONTAINS: dict[str, frozenset[str]] = {
    "NRES": frozenset({"NRES", "GRU", "HMB", "DS", "POA", "CC"}),
    "GRU": frozenset({"GRU", "HMB", "DS", "POA"}),
    "HMB": frozenset({"HMB", "DS"}),
    "DS": frozenset({"DS"}),
    "POA": frozenset({"POA"}),
    "CC": frozenset({"CC"}),
}


def normalise_code(code: str) -> str:
    """Return the DUO short name for a short name or a ``DUO:0000042``-style identifier.

    Raises:
        ValueError: the code is not a DUO code this package knows.

    """
    text = code.strip()
    upper = text.upper()
    if upper in ALL_CODES:
        return upper
    ident = upper.replace("_", ":")
    if ident in _BY_ID:
        return _BY_ID[ident]
    raise ValueError(f"unknown DUO code {code!r}; known: {sorted(ALL_CODES)}")


@dataclass(frozen=True)
class DiseaseHierarchy:
    """Parent links between disease codes (MONDO ids or ICD-10 codes).

    ICD-10 codes are hierarchical by prefix (``ICD10:O24`` is a parent of
    ``ICD10:O24.4``) without a table; MONDO needs explicit parent links. The default
    table is a small excerpt for the Iwamizawa scenario; deployments pass their own.

    Attributes:
        parents: code -> its direct parent codes.

    """

    parents: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def is_same_or_descendant(self, disease: str, ancestor: str) -> bool:
        """Return True when ``disease`` is ``ancestor`` or lies below it."""
        d, a = _norm_disease(disease), _norm_disease(ancestor)
        if d == a:
            return True
        if d.startswith("ICD10:") and a.startswith("ICD10:"):
            return d.startswith(a) and len(d) > len(a)
        seen: set[str] = set()
        stack = [d]
        while stack:
            cur = stack.pop()
            for parent in self.parents.get(cur, ()):
                p = _norm_disease(parent)
                if p == a:
                    return True
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return False

    def related(self, one: str, other: str) -> bool:
        """Return True when either disease is the same as or below the other."""
        return self.is_same_or_descendant(one, other) or self.is_same_or_descendant(other, one)


def _norm_disease(code: str) -> str:
    text = code.strip().upper().replace("_", ":")
    if text.startswith(("ICD-10:", "ICD10CM:", "ICD10:")):
        text = "ICD10:" + text.split(":", 1)[1]
    return text.replace(".", "") if text.startswith("ICD10:") else text


#: A small MONDO excerpt: diabetes, its types, and the root.
DEFAULT_DISEASES = DiseaseHierarchy(
    parents={
        "MONDO:0005015": ("MONDO:0000001",),  # diabetes mellitus
        "MONDO:0005147": ("MONDO:0005015",),  # type 1 diabetes mellitus
        "MONDO:0005148": ("MONDO:0005015",),  # type 2 diabetes mellitus
        "MONDO:0005406": ("MONDO:0005015",),  # gestational diabetes
    }
)


def _request_categories(codes: Iterable[str]) -> frozenset[str]:
    cats = frozenset(c for c in codes if c in USE_CATEGORIES)
    return cats or frozenset({"GRU"})


def covers(
    consented: Iterable[str],
    consented_diseases: Iterable[str],
    request_codes: Iterable[str],
    request_disease: str | None,
    diseases: DiseaseHierarchy = DEFAULT_DISEASES,
) -> bool:
    """Return True when every use category of the request lies inside a consented one.

    A request that names no category counts as ``GRU``. A ``DS`` request needs a disease;
    without one only ``HMB``, ``GRU`` or ``NRES`` can cover it.
    """
    allowed = [c for c in consented if c in USE_CATEGORIES]
    dis = tuple(consented_diseases)
    for want in _request_categories(request_codes):
        if not any(
            _category_covers(have, dis, want, request_disease, diseases) for have in allowed
        ):
            return False
    return True


def _category_covers(
    have: str,
    have_diseases: tuple[str, ...],
    want: str,
    want_disease: str | None,
    diseases: DiseaseHierarchy,
) -> bool:
    if want not in _CONTAINS[have]:
        return False
    if have == "DS":
        if want_disease is None:
            return False
        return any(diseases.is_same_or_descendant(want_disease, d) for d in have_diseases)
    return True


def overlaps(
    denied: Iterable[str],
    denied_diseases: Iterable[str],
    request_codes: Iterable[str],
    request_disease: str | None,
    diseases: DiseaseHierarchy = DEFAULT_DISEASES,
) -> bool:
    """Return True when some use category of the request overlaps a denied one.

    Two categories overlap when one contains the other; ``DS`` with diseases overlaps a
    ``DS`` request whose disease is related (same, above or below), or a request without
    a disease.
    """
    dis = tuple(denied_diseases)
    for want in _request_categories(request_codes):
        for have in (c for c in denied if c in USE_CATEGORIES):
            if want in _CONTAINS[have] and have != "DS":
                return True
            if have in _CONTAINS[want] and have != "DS":
                return True
            if have == "DS" and "DS" in _CONTAINS[want]:
                if want != "DS" or request_disease is None:
                    return True
                if any(diseases.related(request_disease, d) for d in dis):
                    return True
    return False


def meets_modifier(
    modifier: str, request_codes: Iterable[str], commercial: bool, requester_type: str
) -> bool:
    """Return True when a request meets one DUO modifier (see the module docstring).

    Raises:
        ValueError: ``modifier`` is not a DUO modifier.

    """
    codes = set(request_codes)
    is_commercial = commercial or requester_type == "commercial"
    if modifier == "NCU":
        return not is_commercial
    if modifier == "NPU":
        return requester_type in NONPROFIT_REQUESTER_TYPES
    if modifier == "NPUNCU":
        return not is_commercial and requester_type in NONPROFIT_REQUESTER_TYPES
    if modifier == "NMDS":
        return "MDS" not in codes
    if modifier in MODIFIERS:
        return modifier in codes
    raise ValueError(f"{modifier!r} is not a DUO modifier")
