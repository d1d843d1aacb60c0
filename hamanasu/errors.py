"""The error every package's CLI turns into one line and exit code 2."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from a user: the message names the field or file and what is wrong."""
