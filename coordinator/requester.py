"""Who a job's requester is: the organisation the operator registered, never the spec's claim.

A job spec's ``[purpose]`` names the requester (``requester``), its type
(``requester_type``: academic, public, commercial, clinical) and whether the use is
commercial (``commercial``); node policies trust, refuse or auto-approve on exactly these.
They are filled in here from the submitting researcher's registered organisation:

* ``requester`` = the organisation's name, ``requester_type`` = its type;
* ``project`` must be one of the organisation's registered projects (omitted: its only
  project, if it has one);
* ``commercial`` = the project's registered flag, or true for a commercial organisation.

A spec may state these fields only as the coordinator would fill them; one that claims
otherwise is refused with 422 naming the field (``purpose.requester`` ...), after the
spec's own validation. The stored spec is the filled one, so every node evaluates the
identity the coordinator vouches for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.errors import Forbidden, InvalidSpec
from coordinator.schemas import OrganisationPublic, PrincipalPublic
from federation.spec import JobSpec

__all__ = ["vouch"]


def vouch(
    spec: JobSpec,
    claims: Mapping[str, Any],
    researcher: PrincipalPublic,
    organisation: OrganisationPublic | None,
) -> JobSpec:
    """Return ``spec`` with its purpose's identity filled from ``organisation``.

    Args:
        spec: the validated spec.
        claims: the submitted ``[purpose]`` table as written (what the spec claims).
        researcher: the authenticated submitter.
        organisation: the organisation registered for them (None: none is).

    Returns:
        A copy of ``spec`` whose purpose holds the vouched identity.

    Raises:
        Forbidden: the researcher has no registered organisation (field ``organisation``).
        InvalidSpec: the spec claims another requester, type, commercial flag, or a project
            the organisation did not register (the field is named).
    """
    if organisation is None:
        raise Forbidden(
            f"organisation: researcher {researcher.name} has no registered organisation; "
            "the operator registers it (hamanasu coordinator organisation add / principal add "
            "--organisation)",
            field="organisation",
        )
    projects = {p.name: p.commercial for p in organisation.projects}
    project = claims.get("project")
    if project is None and len(projects) == 1:
        project = next(iter(projects))
    if project not in projects:
        raise InvalidSpec(
            f"{organisation.name} may run jobs for {sorted(projects)}; "
            f"got {repr(project)[:80]}",
            field="purpose.project",
        )
    vouched = {
        "project": project,
        "requester": organisation.name,
        "requester_type": organisation.type,
        "commercial": organisation.type == "commercial" or projects[project],
    }
    for key, value in vouched.items():
        if key in claims and claims[key] != value:
            raise InvalidSpec(
                "the coordinator fills it from your registered organisation "
                f"({value!r}); the spec claims {repr(claims[key])[:80]}",
                field=f"purpose.{key}",
            )
    return spec.model_copy(update={"purpose": spec.purpose.model_copy(update=vouched)})
