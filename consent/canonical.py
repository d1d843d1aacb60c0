"""RFC 8785 (JSON Canonicalization Scheme) bytes, fast.

:func:`canonical_json` returns exactly what ``rfc8785.dumps`` returns. For the common
case (ASCII keys, safe integers, no NUL characters) it lets the C JSON encoder do the
work and asks ``rfc8785`` only for the numbers ECMAScript formats differently from
Python (floats); anything else goes to ``rfc8785.dumps`` unchanged. A property test
checks the two agree on arbitrary JSON values.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import rfc8785

__all__ = ["canonical_json"]

_MAX_SAFE = 2**53 - 1
_ENCODE = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


class _SlowPathError(Exception):
    pass


@lru_cache(maxsize=4096)
def _float_text(value: float) -> str:
    return rfc8785.dumps(value).decode()


def _prepare(value: Any, floats: list[float]) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            raise _SlowPathError
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return value
        raise _SlowPathError
    if isinstance(value, float):
        floats.append(value)
        return f"\x00{len(floats) - 1}\x00"
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k.isascii() or "\x00" in k:
                raise _SlowPathError
            out[k] = _prepare(v, floats)
        return out
    if isinstance(value, list | tuple):
        return [_prepare(v, floats) for v in value]
    raise _SlowPathError


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical JSON bytes of ``value``.

    Raises:
        rfc8785.CanonicalizationError: the value cannot be canonicalised (NaN, integers
            beyond 2**53, non-string keys, lone surrogates, ...).

    """
    floats: list[float] = []
    try:
        prepared = _prepare(value, floats)
        text = _ENCODE(prepared)
        if floats:
            for i, f in enumerate(floats):
                text = text.replace(f'"\\u0000{i}\\u0000"', _float_text(f), 1)
        return text.encode("utf-8")
    except (_SlowPathError, UnicodeEncodeError, ValueError):
        return rfc8785.dumps(value)


def parse_canonical(data: bytes) -> tuple[Any, bool]:
    """Parse JSON bytes and tell whether they are exactly RFC 8785 canonical.

    Fast path: ASCII text that the C encoder reproduces byte for byte, with every number
    token already in its ECMAScript form, is canonical; anything else is re-encoded with
    :func:`canonical_json` and compared.

    Returns:
        The parsed value, and True when ``data == canonical_json(value)``.

    Raises:
        ValueError: ``data`` is not JSON.
    """
    odd: list[str] = []

    def number(text: str) -> float:
        value = float(text)
        if _float_text(value) != text:
            odd.append(text)
        return value

    def integer(text: str) -> int | float:
        value = int(text)
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return value
        return number(text)  # JSON numbers are doubles; big integral ones too

    value = json.loads(data, parse_float=number, parse_int=integer)
    if not odd and data.isascii():
        try:
            if _ENCODE(value).encode("ascii") == data:
                return value, True
        except (ValueError, UnicodeEncodeError):
            pass
    try:
        return value, canonical_json(value) == data
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        return value, False
