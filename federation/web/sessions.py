"""Server-side sessions of the web consoles (the coordinator's and each node's).

The browser holds only a random id (an HttpOnly, SameSite=Strict cookie); the session
behind it holds the CSRF value of its forms, its expiry, and what the console needs to
act for the signed-in user (the coordinator's console: the API token; a node's console:
messages to show once). Sessions live in the serving process's memory: a restart signs
everyone out, and nothing about them is ever written to disk.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Session", "SessionStore", "same_secret"]


@dataclass
class Session:
    """One signed-in browser.

    Attributes:
        csrf: the value every form of this session must carry.
        expires: when it ends (``time.monotonic()`` seconds).
        token: the API token the console acts with (coordinator), if any.
        flash: messages shown on the next page, as (kind, text).
    """

    csrf: str
    expires: float
    token: str | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)


class SessionStore:
    """Sessions by random id, each ending ``ttl`` seconds after sign-in."""

    def __init__(self, ttl: float = 8 * 3600) -> None:
        self.ttl = ttl
        self._items: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str | None = None) -> str:
        """Open a session for a verified sign-in; return its id (the cookie's value)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, v in self._items.items() if v.expires < now]:
                del self._items[key]
            self._items[sid] = Session(secrets.token_urlsafe(24), now + self.ttl, token)
        return sid

    def get(self, sid: str | None) -> Session | None:
        """Return the live session ``sid`` names, else None."""
        if not sid:
            return None
        with self._lock:
            item = self._items.get(sid)
            if item is None or item.expires < time.monotonic():
                self._items.pop(sid, None)
                return None
            return item

    def drop(self, sid: str | None) -> None:
        """End a session (sign-out)."""
        with self._lock:
            self._items.pop(sid or "", None)


def same_secret(given: str, expected: str) -> bool:
    """Return whether a submitted secret (CSRF value, sign-in nonce) equals the expected one.

    The comparison is constant-time over the UTF-8 bytes, so any text a browser sends,
    non-ASCII included, is an ordinary mismatch rather than an error.
    """
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
