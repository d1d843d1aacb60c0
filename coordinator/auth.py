"""API tokens: generation, argon2id hashing, verification with a short in-memory cache.

A token reads ``hmn_<prefix>_<secret>``: the prefix (public, 12 characters) finds the
stored row, the whole token is checked against its argon2id hash. The plain token is
returned once, at creation, and never stored or logged. Verified tokens are remembered
for a few seconds under a keyed BLAKE2 digest (never the token itself) so status reads
do not pay an argon2 verification each. Revoking a token through the process that
cached it clears its entry at once; a revocation made by another process on the same
database (another worker) takes effect when the entry expires, at most the cache period
(``token_cache_seconds``) later.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["IssuedToken", "TokenVerifier", "new_token", "split_token"]

#: The roles a principal can hold.

_PREFIX_LEN = 12


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: ``token`` is shown once; only ``prefix`` and ``hash`` are kept."""

    token: str
    prefix: str
    hash: str

    def __repr__(self) -> str:  # never print the secret by accident
        return f"IssuedToken(prefix={self.prefix!r})"


def split_token(token: str) -> str | None:
    """Return the lookup prefix of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "hmn" or len(parts[1]) != _PREFIX_LEN or len(parts[2]) < 32:
        return None
    if len(token) > 200:
        return None
    return parts[1]


def new_token(hasher: PasswordHasher) -> IssuedToken:
    """Generate a token (256 random bits after a 72-bit prefix) and its argon2id hash."""
    prefix = secrets.token_hex(_PREFIX_LEN // 2)
    token = f"hmn_{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedToken(token=token, prefix=prefix, hash=hasher.hash(token))


class TokenVerifier:
    """Checks tokens against stored hashes, remembering recent successes for ``ttl`` seconds.

    Args:
        hasher: the argon2 hasher (its parameters come from the settings).
        ttl: seconds a verified token is remembered (0: verify every call).
        clock: monotonic time source (tests pass a fake one).
    """

    def __init__(
        self, hasher: PasswordHasher, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hasher = hasher
        self.ttl = ttl
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def generation(self) -> int:
        """A counter :meth:`forget` increments: read it before looking a token up.

        Passing it to :meth:`verify` keeps a verification that raced a revocation (the
        row was read before the revocation, the hash checked after it) out of the cache.
        """
        return self._generation

    def _digest(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), key=self._key, digest_size=32).digest()

    def cached(self, token: str) -> str | None:
        """Return the principal id of a recently verified token, else None."""
        if self.ttl <= 0:
            return None
        entry = self._cache.get(self._digest(token))
        if entry is None or entry[2] < self.clock():
            return None
        return entry[1]

    def verify(
        self,
        token: str,
        stored_hash: str,
        principal_id: str,
        prefix: str,
        generation: int | None = None,
    ) -> bool:
        """Check ``token`` against ``stored_hash``; remember it on success.

        Args:
            token: the presented token.
            stored_hash: its row's argon2id hash.
            principal_id: the principal the row belongs to.
            prefix: the row's prefix (to forget it when revoked).
            generation: :attr:`generation` read before the row was; if a token was
                forgotten since, the success is not remembered.

        Returns:
            Whether the token matches (a malformed hash counts as no match).
        """
        try:
            self.hasher.verify(stored_hash, token)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        if self.ttl > 0:
            digest = self._digest(token)
            with self._lock:
                if generation is not None and generation != self._generation:
                    return True  # a revocation raced this look-up: do not remember it
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (prefix, principal_id, self.clock() + self.ttl)
        return True

    def forget(self, prefix: str | None = None, principal_id: str | None = None) -> None:
        """Drop cached entries of a revoked token (by prefix) or a disabled principal."""
        with self._lock:
            self._generation += 1
            for key, (p, pid, _) in list(self._cache.items()):
                if p == prefix or pid == principal_id:
                    del self._cache[key]

    @staticmethod
    def same(a: str, b: str) -> bool:
        """Compare two strings in constant time."""
        return hmac.compare_digest(a.encode(), b.encode())
