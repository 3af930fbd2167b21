"""`Idempotency-Key` for every state-changing route, applied once as middleware.

For POST, PUT, PATCH and DELETE with an ``Idempotency-Key`` header, the request runs through
``booking.idempotency.run_once``: the middleware opens the request's database session, the
route's ``db_session`` dependency hands out that session (and does not commit), and the route's
work and its stored response commit together. A route declares the key mandatory with
``opt={"idempotency_key": "required"}``, or ``"natural"`` when the route is idempotent by its
own subject and talks to a provider between transactions (checkout: the hold is the key), so
holding a request transaction open across that call would only tie up connections, or
``"unstored"`` when its answer carries a secret that must not sit in a replayable record
(sign-in: a retry signs in again, which is harmless, instead of handing back a token that
may have been revoked since).
Replays carry ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from api.principals import bearer_of, fan_principal
from api.problems import problem_type, retry_after
from booking import metrics
from booking.accounts import fans
from booking.errors import BookingError, NotAuthenticated
from booking.idempotency import IDEMPOTENT_SESSION, StoredResponse, run_once

METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY = 1024 * 1024
# Headers that describe one transmission, not the answer: never stored or replayed.
_HOP_HEADERS = frozenset({"content-length", "date", "server", "transfer-encoding", "connection"})


def owned_session(scope: Scope) -> AsyncSession | None:
    """The session this middleware opened for the request, when it runs under a key: the
    request's database work (its authentication included) uses that one connection."""
    session: AsyncSession | None = scope.get("state", {}).get(IDEMPOTENT_SESSION)
    return session


async def caller_scope(scope: Scope) -> str:
    """Keys are per caller: the fan, whichever of their tokens is presented (a retry after
    signing in again is the same intent, and must not run twice), else the credential (a
    staff key, or a token that will be refused), else the client address when anonymous."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = bearer_of(value.decode("latin-1"))
            if token is not None and token.startswith(fans.TOKEN_PREFIX):
                with contextlib.suppress(NotAuthenticated):
                    principal = await fan_principal(scope["litestar_app"].state, token)
                    return f"fan:{principal.fan_id}"
            return "auth:" + hashlib.sha256(value).hexdigest()[:40]
    client = scope.get("client")
    return f"anon:{client[0] if client else 'unknown'}"


def _problem(status: int, code: str, title: str, detail: str) -> StoredResponse:
    body = json.dumps({"type": problem_type(code), "title": title, "status": status, "detail": detail})
    return StoredResponse(status, body.encode(), {"content-type": "application/problem+json"})


def render_error(error: BookingError) -> StoredResponse:
    response = _problem(error.status, error.code, error.title, error.detail)
    if (seconds := retry_after(error)) is not None:
        response.headers["retry-after"] = str(seconds)
    return response


async def _send(send: Send, response: StoredResponse, *, replayed: bool) -> None:
    headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
    headers.append((b"content-length", str(len(response.body)).encode()))
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


class IdempotencyMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        method = str(scope.get("method", ""))
        key = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"idempotency-key"), None)
        policy = scope["route_handler"].opt.get("idempotency_key")
        required = policy == "required"
        if method not in METHODS or policy in ("natural", "unstored") or (key is None and not required):
            await next_app(scope, receive, send)
            return
        if key is None:
            problem = _problem(
                400,
                "idempotency-key-required",
                "This request needs an Idempotency-Key header",
                "Send a unique key (e.g. a UUID) per intended action, and the same key when retrying it.",
            )
            await _send(send, problem, replayed=False)
            return
        body = await _read_body(receive)
        if body is None:
            await _send(
                send, _problem(413, "body-too-large", "The request body is too large", ""), replayed=False
            )
            return
        path = scope["path"] + (
            "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
        )

        async def operation(session: AsyncSession) -> StoredResponse:
            scope.setdefault("state", {})[IDEMPOTENT_SESSION] = session
            # A 4xx or 5xx undoes the route's work (run_once rolls its transaction back).
            return await _capture(next_app, scope, body)

        try:
            outcome = await run_once(
                scope["litestar_app"].state.sessionmaker,
                scope=await caller_scope(scope),
                key=key,
                method=method,
                path=path,
                body=body,
                operation=operation,
                render_error=render_error,
            )
        except BookingError as error:
            await _send(send, render_error(error), replayed=False)
            return
        if outcome.replayed:
            metrics.IDEMPOTENCY_REPLAYS.inc()
        await _send(send, outcome.response, replayed=outcome.replayed)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _capture(app: ASGIApp, scope: Scope, body: bytes) -> StoredResponse:
    delivered = False

    async def replay_body() -> Any:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 500
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                lowered = name.decode("latin-1").lower()
                if lowered not in _HOP_HEADERS:
                    headers[lowered] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, replay_body, keep)
    return StoredResponse(status, b"".join(chunks), headers)
