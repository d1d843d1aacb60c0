"""The coordinator's error vocabulary and its catalogue of HTTP statuses and public messages.

Every error the service raises on purpose is a :class:`CoordinatorError`; the API turns
it into ``{"detail": message, "code": code}`` with the catalogued status. Messages name
the field or resource concerned and never carry a token, a hash or a stack trace.
"""

from __future__ import annotations

__all__ = [
    "CATALOGUE",
    "Conflict",
    "CoordinatorError",
    "Forbidden",
    "InvalidInput",
    "InvalidSpec",
    "NotFound",
    "ResultHeld",
    "SettingsError",
    "TooManyRequests",
    "Unauthorized",
]


class CoordinatorError(Exception):
    """Base of every deliberate coordinator error.

    Attributes:
        code: the catalogue key.
        message: the public message (safe to show to the caller).
        field: the request field concerned, if any.
    """

    code = "error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Unauthorized(CoordinatorError):
    """No token, or a token that is unknown, malformed or revoked."""

    code = "unauthorized"


class Forbidden(CoordinatorError):
    """The principal's role does not allow the call."""

    code = "forbidden"


class NotFound(CoordinatorError):
    """No such job, node or principal (or not visible to the caller)."""

    code = "not_found"


class Conflict(CoordinatorError):
    """The call clashes with the current state (a name taken, a job already finished)."""

    code = "conflict"


class ResultHeld(CoordinatorError):
    """The job's result waits for (or was withheld by) a node's release review."""

    code = "result_held"


class InvalidSpec(CoordinatorError):
    """The job spec fails validation, or asks for nodes, features or ε no node allows."""

    code = "invalid_spec"


class InvalidInput(CoordinatorError):
    """A request field that passed the schema but not the check behind it (e.g. a bad key)."""

    code = "invalid_input"


class SettingsError(CoordinatorError):
    """Settings that are missing or insecure; the service refuses to start."""

    code = "settings"


class TooManyRequests(CoordinatorError):
    """A client sent too many bad tokens: it waits ``retry_after`` seconds (429)."""

    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: Error code → HTTP status.
CATALOGUE: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "result_held": 409,
    "invalid_spec": 422,
    "invalid_input": 422,
    "too_many_requests": 429,
    "settings": 500,
    "error": 400,
}
