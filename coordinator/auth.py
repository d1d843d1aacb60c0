"""API tokens: generation, keyed hashing, verification with a short in-memory cache.

A token reads ``hmn_<prefix>_<secret>``: the prefix (public, 12 characters) finds the
stored row, the whole token is checked against its stored hash. The secret part holds 256
random bits, so no guessing can succeed and a slow password hash (argon2) would only make
each bad guess cost the server CPU (about 27 ms with the parameters once used here, an easy
denial of service). A token is therefore stored as its keyed BLAKE2b digest
(:class:`TokenHasher`), keyed with a 256-bit server secret kept in the data folder (mode
0600, :func:`load_token_key`): a copy of the database alone cannot even test a guess.
Hashes stored by earlier versions (argon2id) are still verified, once, and replaced by the
keyed digest on that first use; ``argon2-cffi`` is imported only then.

The plain token is returned once, at creation, and never stored or logged. Verified
tokens are remembered for a few seconds under a keyed digest as well, so status reads skip
the database. Revoking a token through the process that cached it clears its entry at
once; a revocation made by another process on the same database (another worker) takes
effect when the entry expires, at most the cache period (``token_cache_seconds``) later.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TOKEN_KEY_FILE",
    "BadTokenThrottle",
    "IssuedToken",
    "TokenHasher",
    "TokenVerifier",
    "load_token_key",
    "new_token",
    "split_token",
]

#: The server secret keying token hashes, in the coordinator's data folder (0600).
TOKEN_KEY_FILE = "token-hash.key"

_KEYED = "blake2b-keyed$"
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


def load_token_key(data_dir: Path) -> bytes:
    """Return the server secret keying token hashes, creating it (0600) on first use.

    Raises:
        ValueError: the key file is readable by others or not 32 bytes (never its content).
    """
    path = data_dir / TOKEN_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ValueError(f"{TOKEN_KEY_FILE}: {path} is readable by others; chmod 600 it")
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"{TOKEN_KEY_FILE}: {path} does not hold a 32-byte key")
    return key


class TokenHasher:
    """Keyed BLAKE2b digests of tokens; verifies legacy argon2id hashes too.

    Args:
        key: the 32-byte server secret (:func:`load_token_key`).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("key: a token hash key is 32 bytes")
        self._key = key

    def hash(self, token: str) -> str:
        """Return the stored form of ``token``: ``blake2b-keyed$<hex digest>``."""
        digest = hashlib.blake2b(token.encode(), key=self._key, digest_size=32).hexdigest()
        return _KEYED + digest

    @staticmethod
    def is_legacy(stored: str) -> bool:
        """Return whether ``stored`` is an argon2id hash from an earlier version."""
        return stored.startswith("$argon2")

    def verify(self, stored: str, token: str) -> bool:
        """Return whether ``token`` matches ``stored`` (a malformed hash never matches)."""
        if stored.startswith(_KEYED):
            return hmac.compare_digest(stored.encode(), self.hash(token).encode())
        if not self.is_legacy(stored):
            return False
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        try:
            return bool(PasswordHasher().verify(stored, token))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def new_token(hasher: TokenHasher) -> IssuedToken:
    """Generate a token (256 random bits after a 72-bit prefix) and its keyed hash."""
    prefix = secrets.token_hex(_PREFIX_LEN // 2)
    token = f"hmn_{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedToken(token=token, prefix=prefix, hash=hasher.hash(token))


class TokenVerifier:
    """Checks tokens against stored hashes, remembering recent successes for ``ttl`` seconds.

    Args:
        hasher: the token hasher.
        ttl: seconds a verified token is remembered (0: verify every call).
        clock: monotonic time source (tests pass a fake one).
    """

    def __init__(
        self, hasher: TokenHasher, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic
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
            stored_hash: its row's stored hash.
            principal_id: the principal the row belongs to.
            prefix: the row's prefix (to forget it when revoked).
            generation: :attr:`generation` read before the row was; if a token was
                forgotten since, the success is not remembered.

        Returns:
            Whether the token matches (a malformed hash counts as no match).
        """
        if not self.hasher.verify(stored_hash, token):
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


class BadTokenThrottle:
    """Counts bad tokens per client; a client that sent too many waits before trying again.

    Guessing a 256-bit token cannot succeed, but every guess still costs a database look-up
    and a hash: a client that sent ``limit`` bad tokens within ``window`` seconds is refused
    (429, with how long to wait) on every further bad token until the oldest of them is
    ``window`` seconds old. A valid token is never refused: it is checked before the
    throttle answers, so everyone else behind the guesser's address keeps working.

    Args:
        limit: bad tokens a client may send within ``window``.
        window: seconds over which bad tokens are counted.
        clock: monotonic time source (tests pass a fake one).
        max_clients: clients remembered at most (the oldest are forgotten beyond it).
    """

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit, window: a throttle needs limit >= 1 and window > 0")
        self.limit, self.window, self.clock, self.max_clients = limit, window, clock, max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Return how many seconds ``client`` must wait (0: it may try now)."""
        now = self.clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return 0.0
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return 0.0
            return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def failed(self, client: str) -> None:
        """Count a bad token from ``client``."""
        with self._lock:
            if client not in self._failures and len(self._failures) >= self.max_clients:
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(client, deque(maxlen=self.limit)).append(self.clock())
