r"""Log lines that a caller's text cannot forge: control characters escaped before output.

Job names, failure reasons and node messages reach the services' logs. A newline in one
would start what looks like a second, forged log line; a carriage return or a
direction override could hide part of a line on a terminal. :class:`EscapingFormatter`
writes every such character of a record's message as a visible escape (``\n``,
``\x1b``, ``\u202e``); tracebacks, which come from the code, keep their lines.
"""

from __future__ import annotations

import logging
import re

__all__ = ["EscapingFormatter", "escape_controls", "has_controls", "log_to_stderr"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def has_controls(text: str) -> bool:
    """Return whether ``text`` holds a control, line-separator or direction character."""
    return _CONTROL.search(text) is not None


def escape_controls(text: str) -> str:
    """Return ``text`` with control, line-separator and direction characters escaped."""
    return _CONTROL.sub(_escape, text)


class EscapingFormatter(logging.Formatter):
    """A formatter whose messages hold no raw control characters (one record, one line)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """Return the formatted record with its message's control characters escaped."""
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def log_to_stderr(level: int = logging.INFO) -> None:
    """Send the process's log records to stderr, one escaped line each, with time and logger.

    Replaces the handlers the root logger had, like ``logging.basicConfig(force=True)``.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
