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


def scan_canonical(data: bytes) -> tuple[Any, bool]:
    """Parse JSON bytes and tell whether they are exactly RFC 8785 canonical, fast.

    Number tokens are checked against their ECMAScript form as they are parsed and kept
    as marker strings so the C encoder can reproduce the text byte for byte; text that
    is not ASCII, or holds an escaped NUL, is re-encoded with :func:`canonical_json` instead.

    Returns:
        The parsed value, with every non-integer number replaced by a marker string
        (use :func:`parse_canonical` for real numbers), and whether ``data`` is canonical.

    Raises:
        ValueError: ``data`` is not JSON.
    """
    odd: list[str] = []

    def number(text: str) -> str:
        if _float_text(float(text)) != text:
            odd.append(text)
        return f"\x00{text}\x00"

    def integer(text: str) -> int | str:
        value = int(text)
        return value if -_MAX_SAFE <= value <= _MAX_SAFE else number(text)

    value = json.loads(data, parse_float=number, parse_int=integer)
    if odd:
        return value, False
    if data.isascii() and b"\\u0000" not in data:
        text = _ENCODE(value).replace('"\\u0000', "").replace('\\u0000"', "")
        return value, text.encode("utf-8") == data
    real = json.loads(data, parse_int=_int_or_double)
    try:
        return value, canonical_json(real) == data
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        return value, False


def parse_canonical(data: bytes) -> tuple[Any, bool]:
    """Parse JSON bytes and tell whether they are exactly RFC 8785 canonical.

    Returns:
        The parsed value, and True when ``data == canonical_json(value)``.

    Raises:
        ValueError: ``data`` is not JSON.
    """
    _, canonical = scan_canonical(data)
    return json.loads(data, parse_int=_int_or_double), canonical


def _int_or_double(text: str) -> int | float:
    value = int(text)
    return value if -_MAX_SAFE <= value <= _MAX_SAFE else float(text)
