"""Every answer carries an ``X-Request-ID``, and every line logged for it carries the same id.

A client's own id is kept when it is sane (1 to 128 characters of ``A-Z a-z 0-9 . _ : -``),
so a fan's report or a load balancer's id finds the request's lines; anything else (empty,
too long, spaces, quotes, control characters) is replaced by a fresh id, never echoed and
never refused. The id is bound for the request's duration (``booking.logs.open_scope``),
and the same scope collects the fan, hold and order ids the request learns.

The flash-sale buying path runs through this: no regex, no structlog call, one header scan.
"""

from __future__ import annotations

import random
import string

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from booking.logs import close_scope, open_scope

HEADER = b"x-request-id"
MAX_LENGTH = 128
_ALLOWED = (string.ascii_letters + string.digits + "._:-").encode()


def sane(value: bytes) -> bool:
    """Whether a client's request id may be kept: 1 to 128 bytes, all of ``[A-Za-z0-9._:-]``."""
    # translate() deletes the allowed bytes in C: anything left over is not allowed.
    return 0 < len(value) <= MAX_LENGTH and not value.translate(None, _ALLOWED)


def new_request_id() -> bytes:
    """128 random bits as 32 hex digits, like a uuid4's hex. An id names a request and
    grants nothing, so it needs to be unique, not unguessable: Python's own generator (no
    system call; reseeded in a forked child) makes one in half the time ``os.urandom``
    does."""
    return b"%032x" % random.getrandbits(128)


class RequestIdMiddleware:
    """Pure ASGI middleware: binds the request id around the whole request and adds it to
    the response's headers, whoever answers (a route, a problem+json error handler, the
    in-flight bound's 503, a cached or replayed response)."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id: bytes | None = None
        for name, value in scope["headers"]:
            if name == HEADER:
                if sane(value):
                    request_id = value
                break
        if request_id is None:
            request_id = new_request_id()
        header = (HEADER, request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new list: some answers' header lists are shared constants.
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = open_scope(request_id=request_id.decode("ascii"))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            close_scope(token)
