"""Request limits in front of the services' JSON APIs: body size and JSON nesting.

A request whose body is larger than its route allows is answered 413 before any of it
is parsed; a JSON body nested deeper than :data:`MAX_JSON_DEPTH` is answered 422 (the
standard library's parser would otherwise hit its recursion limit and the framework
answer a bare 400; the check parses the body once more, at C speed). Both answers carry
the services' error body ``{"detail", "code", "field"}`` with field ``body``. The
middleware is plain ASGI, so it counts the bytes as they arrive whether or not the
client sent a ``Content-Length``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = ["DEFAULT_MAX_BODY", "MAX_DISCARD", "MAX_JSON_DEPTH", "RequestLimits", "json_depth"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest request body a route takes unless it is given a larger limit (1 MiB).
DEFAULT_MAX_BODY = 1024 * 1024
#: How much of a refused body is read and dropped so the client sees the 413 (16 MiB).
MAX_DISCARD = 16 * 1024 * 1024
#: Deepest JSON nesting (objects and arrays) any request body may have.
MAX_JSON_DEPTH = 64


def json_depth(body: bytes) -> int | None:
    """Return how deeply a JSON text nests objects and arrays (0 for a scalar).

    Returns:
        The depth; ``None`` when the text is not JSON (the framework answers that as it
        does any malformed body). A text too deep for the parser counts as deeper than
        any limit.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        return sys.maxsize
    except ValueError:
        return None
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return deepest


class RequestLimits:
    """ASGI middleware: cap request bodies (413) and JSON nesting (422).

    Args:
        app: the application to protect.
        max_body: the body limit in bytes for every route not listed in ``large``.
        large: (path pattern, limit) pairs for routes that take larger bodies; the first
            pattern that matches the whole path wins.
        max_depth: the deepest JSON nesting accepted.
    """

    def __init__(
        self,
        app: App,
        max_body: int = DEFAULT_MAX_BODY,
        large: Sequence[tuple[str, int]] = (),
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        if max_body < 1 or max_depth < 1:
            raise ValueError("max_body and max_depth must be at least 1")
        self.app = app
        self.max_body = max_body
        self.large = [(re.compile(p), n) for p, n in large]
        self.max_depth = max_depth

    def limit_for(self, path: str) -> int:
        """Return the body limit of ``path`` in bytes."""
        for pattern, limit in self.large:
            if pattern.fullmatch(path):
                return limit
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, refusing it when its body breaks a limit."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _discard(receive, MAX_DISCARD)
            await _refuse(send, 413, "too_large", f"the request body exceeds {limit} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > limit:
                if more:
                    await _discard(receive, MAX_DISCARD)
                await _refuse(send, 413, "too_large", f"the request body exceeds {limit} bytes")
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip()
        # FastAPI reads a body without a content type as JSON too
        as_json = not content_type or content_type.lower().endswith(b"json")
        depth = json_depth(body) if as_json else None
        if depth is not None and depth > self.max_depth:
            await _refuse(
                send,
                422,
                "invalid_input",
                f"the JSON body nests objects or arrays deeper than {self.max_depth} levels",
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _discard(receive: Receive, budget: int) -> None:
    """Read and drop what is left of a refused body, up to ``budget`` bytes.

    A client still sending when the answer comes would otherwise meet a reset connection
    instead of the 413; past the budget the connection is closed anyway.
    """
    seen = 0
    while seen <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(send: Send, status: int, code: str, detail: str) -> None:
    payload = json.dumps({"detail": detail, "code": code, "field": "body"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
