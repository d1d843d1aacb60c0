"""The coordinator's principals (operators, researchers, node admins, auditors) and their tokens."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from coordinator.auth import new_token, split_token
from coordinator.db import aware
from coordinator.errors import Conflict, NotFound, Unauthorized
from coordinator.models import Node, Organisation, Principal, Token
from coordinator.schemas import (
    PrincipalCreate,
    PrincipalPublic,
    Role,
    TokenIssued,
    TokenPublic,
)
from coordinator.store.base import StoreBase

__all__ = ["PrincipalStore", "principal_public"]


def principal_public(p: Principal) -> PrincipalPublic:
    """Return a stored principal's public view."""
    return PrincipalPublic(
        id=p.id,
        name=p.name,
        role=p.role,  # type: ignore[arg-type]  # a stored str; pydantic checks the literal
        node=p.node,
        organisation=p.organisation,
        created_at=aware(p.created_at),
        disabled_at=aware(p.disabled_at),
    )


class PrincipalStore(StoreBase):
    """Principals and tokens: registration, issuing, revoking, authenticating."""

    def create_principal(self, data: PrincipalCreate) -> tuple[PrincipalPublic, TokenIssued]:
        """Register a principal and issue its first token.

        Returns:
            The principal and the token (the only time the token is shown).

        Raises:
            Conflict: the name is taken.
            NotFound: a node admin's node or a researcher's organisation is not registered.
        """
        now = self.clock()
        issued = new_token(self.hasher)
        with self.sessions.begin() as s:
            if data.node is not None and s.get(Node, data.node) is None:
                raise NotFound(f"node: no node named {data.node!r}", field="node")
            if data.organisation is not None and s.get(Organisation, data.organisation) is None:
                raise NotFound(
                    f"organisation: no organisation named {data.organisation!r}",
                    field="organisation",
                )
            if s.scalar(select(Principal.id).where(Principal.name == data.name)) is not None:
                raise Conflict(f"name: a principal named {data.name!r} exists", field="name")
            p = Principal(
                id=uuid.uuid4().hex,
                name=data.name,
                role=data.role,
                node=data.node,
                organisation=data.organisation,
                created_at=now,
            )
            s.add(p)
            s.flush()
            s.add(Token(prefix=issued.prefix, principal_id=p.id, hash=issued.hash, created_at=now))
            public = principal_public(p)
        return public, TokenIssued(
            prefix=issued.prefix, principal_id=public.id, created_at=now, token=issued.token
        )

    def list_principals(self) -> list[PrincipalPublic]:
        """Return every principal, oldest first."""
        with self.sessions() as s:
            return [
                principal_public(p)
                for p in s.scalars(select(Principal).order_by(Principal.created_at))
            ]

    def issue_token(self, principal_id: str) -> TokenIssued:
        """Issue another token for a principal.

        Raises:
            NotFound: no such principal.
        """
        now = self.clock()
        issued = new_token(self.hasher)
        with self.sessions.begin() as s:
            if s.get(Principal, principal_id) is None:
                raise NotFound("principal_id: no such principal", field="principal_id")
            s.add(
                Token(
                    prefix=issued.prefix,
                    principal_id=principal_id,
                    hash=issued.hash,
                    created_at=now,
                )
            )
        return TokenIssued(
            prefix=issued.prefix, principal_id=principal_id, created_at=now, token=issued.token
        )

    def issue_service_token(self, node: str) -> TokenIssued:
        """Issue the node's service a new token, revoking every earlier one of the service.

        The service is a ``node_service`` principal bound to ``node`` (named
        ``<node>.service``), made on first issue.

        Returns:
            The new token (the only time it is shown).

        Raises:
            NotFound: no such node.
            Conflict: another kind of principal already holds the service's name.
        """
        now = self.clock()
        issued = new_token(self.hasher)
        name = f"{node}.service"
        with self.sessions.begin() as s:
            if s.get(Node, node) is None:
                raise NotFound(f"name: no node named {node!r}", field="name")
            p = s.scalar(select(Principal).where(Principal.name == name))
            if p is None:
                p = Principal(
                    id=uuid.uuid4().hex,
                    name=name,
                    role=Role.NODE_SERVICE,
                    node=node,
                    created_at=now,
                )
                s.add(p)
                s.flush()
            elif p.role != Role.NODE_SERVICE or p.node != node:
                raise Conflict(f"name: a principal named {name!r} exists", field="name")
            for old in s.scalars(
                select(Token).where(Token.principal_id == p.id, Token.revoked_at.is_(None))
            ):
                old.revoked_at = now
            s.add(Token(prefix=issued.prefix, principal_id=p.id, hash=issued.hash, created_at=now))
            principal_id = p.id
        self.verifier.forget(principal_id=principal_id)
        return TokenIssued(
            prefix=issued.prefix, principal_id=principal_id, created_at=now, token=issued.token
        )

    def revoke_token(self, prefix: str) -> TokenPublic:
        """Revoke a token by its prefix (idempotent); it stops working at once.

        Raises:
            NotFound: no such token.
        """
        with self.sessions.begin() as s:
            tok = s.get(Token, prefix)
            if tok is None:
                raise NotFound("prefix: no such token", field="prefix")
            if tok.revoked_at is None:
                tok.revoked_at = self.clock()
            out = TokenPublic(
                prefix=tok.prefix,
                principal_id=tok.principal_id,
                created_at=aware(tok.created_at),
                revoked_at=aware(tok.revoked_at),
            )
        self.verifier.forget(prefix=prefix)
        return out

    def _rehash(self, prefix: str, token: str) -> None:
        """Replace a verified token's legacy argon2id hash by its keyed digest."""
        with self.sessions.begin() as s:
            row = s.get(Token, prefix)
            if row is not None and self.hasher.is_legacy(row.hash):
                row.hash = self.hasher.hash(token)

    def cached_principal(self, token: str) -> PrincipalPublic | None:
        """Return the principal of a token verified less than ``token_cache_seconds`` ago.

        No database access and no hashing: callers on an event loop use it as the fast
        path, and fall back to :meth:`authenticate` (blocking) when it returns None.

        Returns:
            The principal, or None if the token is not in the cache (or malformed).
        """
        if split_token(token) is None:
            return None
        principal_id = self.verifier.cached(token)
        if principal_id is None:
            return None
        return self._principals.get(principal_id)

    def authenticate(self, token: str) -> PrincipalPublic:
        """Return the principal holding ``token``.

        Raises:
            Unauthorized: the token is malformed, unknown, revoked, or its principal disabled
                (one message for all, so a caller learns nothing about which).
        """
        denied = Unauthorized("invalid or revoked token")
        prefix = split_token(token)
        if prefix is None:
            raise denied
        cached = self.cached_principal(token)
        if cached is not None:
            return cached
        generation = self.verifier.generation
        principal_id = self.verifier.cached(token)
        with self.sessions() as s:
            if principal_id is None:
                row = s.get(Token, prefix)
                if row is None or row.revoked_at is not None:
                    self.hasher.hash(token)  # the same cost for unknown prefixes
                    raise denied
                if not self.verifier.verify(token, row.hash, row.principal_id, prefix, generation):
                    raise denied
                principal_id = row.principal_id
                if self.hasher.is_legacy(row.hash):
                    self._rehash(prefix, token)
            p = s.get(Principal, principal_id)
            if p is None or p.disabled_at is not None:
                raise denied
            public = principal_public(p)
            if len(self._principals) < 10_000:
                self._principals[principal_id] = public  # only an unset organisation changes
            return public
