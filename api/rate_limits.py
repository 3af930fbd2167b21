"""Rate limits on the routes bots abuse, declared per route and applied once, here.

A route opts in with ``opt={"rate_limit": "<group>"}`` (a group of ``booking.rate_limits``:
signup, login, hold, renew, checkout, queue); the middleware then counts the request against
the group's per-address policy and, for a signed-in fan, its per-fan policy, before the route
reads its body or opens a transaction. Over a limit the answer is 429 problem+json
``rate-limited`` with ``Retry-After`` (seconds until the window has a place again) and the
IETF fields (draft-ietf-httpapi-ratelimit-headers, -10 form)::

    RateLimit: "hold-per-fan";r=0;t=42
    RateLimit-Policy: "hold-per-address";q=60;w=60, "hold-per-fan";q=10;w=60

Every answer of a limited route carries ``RateLimit-Policy`` (it costs nothing: the settings
decide it); ``RateLimit`` comes with refusals only, since the count left would cost a second
Redis round trip on every request that is let through.

The client's address is the ASGI peer; an ``X-Forwarded-For`` is believed only from a peer in
``trusted_proxies``, and then only as far back as the chain stays within trusted proxies.

Placed after the in-flight bound (a refused request there costs nothing else) and before the
Idempotency-Key middleware (a refusal is not stored as the key's answer: a retry after the
wait runs for real).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request
from litestar.enums import ScopeType
from litestar.handlers import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.principals import bearer_of, fan_principal
from api.problems import problem_type
from booking.accounts import fans
from booking.accounts.backoff import BackoffPolicy, SignInGuard
from booking.errors import NotAuthenticated, RateLimited
from booking.rate_limits import (
    GROUPS,
    Group,
    Limiter,
    Refusal,
    Unreachable,
    address_identity,
    groups_of,
    limit_field,
)
from booking.settings import proxy_networks

OPT = "rate_limit"
CLIENT_ADDRESS = "client_address"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A group that fails closed while Redis is away answers as any other missing dependency.
_UNAVAILABLE = json.dumps(
    {
        "type": problem_type("unavailable"),
        "title": "Service temporarily unavailable",
        "status": 503,
        "detail": "Try again in a few seconds.",
    }
).encode()
_UNAVAILABLE_HEADERS = [
    (b"content-type", b"application/problem+json"),
    (b"retry-after", b"5"),
    (b"content-length", str(len(_UNAVAILABLE)).encode()),
]


def client_address_of(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy, in which case
    the nearest ``X-Forwarded-For`` hop that is not one (or the farthest, if all are). A hop
    that is not an address ends the walk: what lies beyond it cannot be believed."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    address = peer
    for hop in reversed(hops):
        try:
            parsed = ipaddress.ip_address(hop)
        except ValueError:
            break
        address = str(parsed)
        if not any(parsed in network for network in trusted):
            break
    return address


def _within(address: str, networks: Iterable[Network]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


@dataclass(frozen=True)
class RateLimits:
    """The API process's limits, made at start-up from the settings (``app.state.rate_limits``)."""

    groups: dict[str, Group]
    limiter: Limiter
    sign_in: SignInGuard
    trusted_proxies: tuple[Network, ...]
    # The RateLimit-Policy header of each group, made once.
    policy_headers: dict[str, tuple[bytes, bytes]]

    def client_address(self, scope: Scope) -> str:
        state = scope.setdefault("state", {})
        address: str | None = state.get(CLIENT_ADDRESS)
        if address is None:
            address = state[CLIENT_ADDRESS] = client_address_of(scope, self.trusted_proxies)
        return address


def client_address(request: Request[Any, Any, Any]) -> str:
    """The request's client address, as the rate limits count it."""
    limits: RateLimits = request.app.state.rate_limits
    return limits.client_address(request.scope)


def check_routes(routes: Iterable[Any]) -> None:
    """Every route's ``rate_limit`` names a group.

    Raises:
        ValueError: one names no group (a typo would otherwise leave the route unlimited).
    """
    for route in routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            name = handler.opt.get(OPT)
            if name is not None and name not in GROUPS:
                raise ValueError(f"{route.path}: rate_limit {name!r} is not one of {sorted(GROUPS)}")


def group_of(handler: BaseRouteHandler) -> str | None:
    name: str | None = handler.opt.get(OPT)
    return name


@asynccontextmanager
async def rate_limits_lifespan(app: Litestar) -> AsyncIterator[None]:
    """``app.state.rate_limits``, on the Redis client and breaker the first lifespan made."""
    check_routes(app.routes)
    settings = app.state.settings
    groups = groups_of(settings)
    limiter = Limiter(app.state.redis, app.state.redis_breaker)
    app.state.rate_limits = RateLimits(
        groups=groups,
        limiter=limiter,
        sign_in=SignInGuard(
            app.state.redis,
            app.state.redis_breaker,
            limiter,
            groups.get("login"),
            BackoffPolicy.from_settings(settings),
        ),
        trusted_proxies=proxy_networks(settings.trusted_proxies),
        policy_headers={
            name: (b"ratelimit-policy", group.policy_field.encode()) for name, group in groups.items()
        },
    )
    yield


async def _fan_of(scope: Scope) -> uuid.UUID | None:
    """The signed-in fan, or None (no fan token, or one that is refused: the route's own
    authentication answers that)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = bearer_of(value.decode("latin-1"))
            if token is None or not token.startswith(fans.TOKEN_PREFIX):
                return None
            with suppress(NotAuthenticated):
                principal = await fan_principal(scope["litestar_app"].state, token)
                return principal.fan_id
            return None
    return None


def _refusal(refusal: Refusal, policy_header: tuple[bytes, bytes]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    error = RateLimited(refusal.policy.name, refusal.retry_after)
    body = json.dumps(
        {
            "type": problem_type(error.code),
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            **error.extra,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"retry-after", str(refusal.retry_after).encode()),
        (b"ratelimit", limit_field(refusal.policy.name, refusal.retry_after).encode()),
        policy_header,
        (b"content-length", str(len(body)).encode()),
    ]
    return headers, body


class RateLimitMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        name = group_of(scope["route_handler"])
        if name is None:
            await next_app(scope, receive, send)
            return
        limits: RateLimits = scope["litestar_app"].state.rate_limits
        group = limits.groups.get(name)
        if group is None:  # rate limits off, or every limit of this group
            await next_app(scope, receive, send)
            return
        policy_header = limits.policy_headers[name]
        try:
            refusal = await limits.limiter.check(
                group, {"address": address_identity(limits.client_address(scope))}
            )
            if refusal is None and group.policy("fan") is not None:
                fan_id = await _fan_of(scope)
                if fan_id is not None:
                    refusal = await limits.limiter.check(group, {"fan": str(fan_id)})
        except Unreachable:
            await send({"type": "http.response.start", "status": 503, "headers": _UNAVAILABLE_HEADERS})
            await send({"type": "http.response.body", "body": _UNAVAILABLE, "more_body": False})
            return
        if refusal is not None:
            headers, body = _refusal(refusal, policy_header)
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new list: some answers' header lists are shared constants.
                message["headers"] = [*message.get("headers", ()), policy_header]
            await send(message)

        await next_app(scope, receive, with_policy)
