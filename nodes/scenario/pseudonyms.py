"""Consortium pseudonyms: HMAC-SHA256 over a resident id, truncated to 32 hex digits."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["derive_scenario_key", "pseudonymize", "pseudonymize_many"]

PSEUDONYM_HEX_DIGITS = 32


def derive_scenario_key(seed: int) -> bytes:
    """Return a throwaway 32-byte consortium key for a synthetic scenario.

    The key depends only on ``seed`` so that a scenario is reproducible; it is never
    written anywhere. A real consortium key comes from the consortium's key service.
    """
    return hashlib.sha256(f"hamanasu-scenario-consortium-key/{seed}".encode()).digest()


def pseudonymize(resident_id: str, key: bytes) -> str:
    """Return the consortium pseudonym of ``resident_id``.

    Returns:
        The first 32 hex digits of HMAC-SHA256(key, resident_id), lower case.

    Raises:
        ValueError: ``key`` is shorter than 16 bytes or ``resident_id`` is empty.

    """
    if len(key) < 16:
        raise ValueError("key: a consortium key needs at least 16 bytes")
    if not resident_id:
        raise ValueError("resident_id: must not be empty")
    digest = hmac.new(key, resident_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_DIGITS]


def pseudonymize_many(resident_ids: Iterable[str], key: bytes) -> list[str]:
    """Return the pseudonyms of ``resident_ids`` in order (see ``pseudonymize``).

    Raises:
        ValueError: as ``pseudonymize``.

    """
    if len(key) < 16:
        raise ValueError("key: a consortium key needs at least 16 bytes")
    base = hmac.new(key, digestmod=hashlib.sha256)
    out = []
    for rid in resident_ids:
        if not rid:
            raise ValueError("resident_id: must not be empty")
        h = base.copy()
        h.update(rid.encode("utf-8"))
        out.append(h.hexdigest()[:PSEUDONYM_HEX_DIGITS])
    return out
