"""Researchers' organisations: who a job's requester is, as the operator registered it."""

from __future__ import annotations

from sqlalchemy import select

from coordinator.db import aware
from coordinator.errors import Conflict, NotFound
from coordinator.models import Organisation, Principal
from coordinator.schemas import OrganisationCreate, OrganisationPublic, PrincipalPublic
from coordinator.store.base import StoreBase

__all__ = ["OrganisationStore"]


def _public(o: Organisation) -> OrganisationPublic:
    return OrganisationPublic.model_validate(
        {"name": o.name, "type": o.type, "projects": o.projects, "created_at": aware(o.created_at)}
    )


class OrganisationStore(StoreBase):
    """Organisations (their type and projects) and which researcher belongs to which."""

    def register_organisation(self, data: OrganisationCreate) -> OrganisationPublic:
        """Register an organisation.

        Returns:
            The organisation as stored.

        Raises:
            Conflict: the name is taken.
        """
        with self.sessions.begin() as s:
            if s.get(Organisation, data.name) is not None:
                raise Conflict(f"name: an organisation named {data.name!r} exists", field="name")
            row = Organisation(
                name=data.name,
                type=data.type,
                projects=[p.model_dump() for p in data.projects],
                created_at=self.clock(),
            )
            s.add(row)
            s.flush()
            return _public(row)

    def list_organisations(self) -> list[OrganisationPublic]:
        """Return every registered organisation, by name."""
        with self.sessions() as s:
            return [_public(o) for o in s.scalars(select(Organisation).order_by(Organisation.name))]

    def organisation_of(self, principal: PrincipalPublic) -> OrganisationPublic | None:
        """Return the organisation registered for ``principal`` (None: it has none)."""
        if principal.organisation is None:
            return None
        with self.sessions() as s:
            row = s.get(Organisation, principal.organisation)
            return None if row is None else _public(row)

    def set_organisation(self, principal_id: str, organisation: str) -> None:
        """Make a researcher registered without an organisation a member of ``organisation``.

        A membership never changes once set (another worker process may hold the principal
        in its cache: a researcher it still sees without one is refused, never vouched for
        under a former organisation).

        Raises:
            NotFound: no such principal or organisation.
            Conflict: the principal is not a researcher, or already belongs to another one.
        """
        with self.sessions.begin() as s:
            p = s.get(Principal, principal_id)
            if p is None:
                raise NotFound("principal_id: no such principal", field="principal_id")
            if s.get(Organisation, organisation) is None:
                raise NotFound(
                    f"organisation: no organisation named {organisation!r}", field="organisation"
                )
            if p.role != "researcher":
                raise Conflict(
                    "organisation: only a researcher belongs to an organisation",
                    field="organisation",
                )
            if p.organisation not in (None, organisation):
                raise Conflict(
                    f"organisation: {p.name} belongs to {p.organisation!r}; register a new "
                    "researcher principal for another organisation",
                    field="organisation",
                )
            p.organisation = organisation
        self._principals.pop(principal_id, None)
