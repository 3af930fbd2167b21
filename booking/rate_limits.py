"""Rate limits: how many requests of one kind a fan, a client address or an account may make
in a window, so that bots cannot cycle holds at the ticket cap, guess passwords or mint
accounts at machine speed.

The counting is the ``limits`` library's moving window in Redis: each request that is let
through adds its timestamp to a list of at most ``count`` entries, in one Lua script, so
concurrent requests (from any number of API processes) cannot both take the last place, and
the window is exact (no burst of twice the limit across a boundary, as a fixed window lets
through). A refused request adds nothing, so a client that waits as told gets in. Memory is
at most ``count`` entries per identity and policy, and each list expires with its window.

Redis holds only what may be lost (ARCHITECTURE §5): when it cannot be asked, each group of
limits either lets the request through (fail open) or refuses it with 503 (fail closed), as
``Group.fail_open`` says, and the process-wide ``Breaker`` makes an outage cost one Redis
timeout per cool-down rather than one per request.

A policy is named as the IETF RateLimit header fields name it (draft-ietf-httpapi-ratelimit-
headers, the -10 form): ``RateLimit-Policy: "hold-per-fan";q=10;w=60`` describes it, and a
refusal says ``RateLimit: "hold-per-fan";r=0;t=42``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from booking import metrics
from booking.redis_client import Breaker
from booking.settings import Settings, parse_rate

log = logging.getLogger("boxoffice.rate_limits")

KEY_PREFIX = "ratelimit"
Per = Literal["fan", "address", "account"]

# What each group limits, in the order its policies are counted: the address first (no
# database work to know it, so a flood of made-up tokens is stopped before any is looked
# up), then the fan or account. A refusal stops the count, so later policies are not charged.
GROUPS: dict[str, tuple[Per, ...]] = {
    "signup": ("address",),
    "login": ("address", "account"),
    "hold": ("address", "fan"),
    "renew": ("address", "fan"),
    "checkout": ("address", "fan"),
    "queue": ("address", "fan"),
}
# Sign-up fails closed: an account is what a bot multiplies (each brings its own per-fan
# limits and ticket cap), so while the per-address count cannot be kept none are made. Every
# other group fails open: a hold, renewal or checkout is decided in PostgreSQL (the ticket
# cap included), and the sale must go on without Redis; sign-in keeps its Argon2 cost and
# the process's in-flight bound; the waiting room fails closed by itself.
FAIL_CLOSED = frozenset({"signup"})


class Unreachable(Exception):
    """Redis could not be asked: it failed just now, or the breaker is skipping it."""


@dataclass(frozen=True)
class Policy:
    """``count`` requests per ``window`` seconds for each fan, address or account."""

    name: str
    count: int
    window: int
    per: Per

    @cached_property
    def item(self) -> RateLimitItem:
        return RateLimitItemPerSecond(self.count, self.window)

    @property
    def field(self) -> str:
        """This policy as an item of the RateLimit-Policy header field."""
        return f'"{self.name}";q={self.count};w={self.window}'


def limit_field(policy: str, retry_after: int) -> str:
    """The RateLimit header field of a refusal: nothing left of ``policy`` for
    ``retry_after`` seconds."""
    return f'"{policy}";r=0;t={retry_after}'


@dataclass(frozen=True)
class Group:
    """The policies one kind of request is held to, and whether it goes ahead when Redis
    cannot be asked."""

    name: str
    policies: tuple[Policy, ...]
    fail_open: bool

    @property
    def policy_field(self) -> str:
        """The RateLimit-Policy header field value: every policy of the group."""
        return ", ".join(policy.field for policy in self.policies)

    def policy(self, per: Per) -> Policy | None:
        return next((policy for policy in self.policies if policy.per == per), None)


@dataclass(frozen=True)
class Refusal:
    policy: Policy
    retry_after: int


def groups_of(settings: Settings) -> dict[str, Group]:
    """Each group with the policies the settings give it; none when rate limits are off, and
    a group whose every limit is "off" is left out."""
    if not settings.rate_limits:
        return {}
    found = {}
    for name, pers in GROUPS.items():
        policies = []
        for per in pers:
            rate = parse_rate(getattr(settings, f"rate_limit_{name}_per_{per}"))
            if rate is not None:
                policies.append(Policy(f"{name}-per-{per}", rate[0], rate[1], per))
        if policies:
            found[name] = Group(name, tuple(policies), fail_open=name not in FAIL_CLOSED)
    return found


@lru_cache(maxsize=4096)  # the addresses of the last moment's requests: parsing is most of it
def address_identity(address: str) -> str:
    """What an address is counted as: an IPv4 address itself, an IPv6 address by its /64
    (one subscriber's share, which a client can walk through at will), anything else (a
    Unix socket, a test client's name) as given."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def account_identity(email: str) -> str:
    """An email as sign-in compares it (trimmed, any case), digested: Redis keeps no emails,
    and an unknown email is counted exactly like a known one."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class Limiter:
    """Moving-window counts in Redis through ``redis``'s own connection pool (its timeouts,
    its retry, its URL whatever the scheme), skipped while ``breaker`` is open."""

    def __init__(self, redis: Redis, breaker: Breaker) -> None:
        # The URL here only picks the redis-py bridge: the connection pool decides the server.
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            # Typed as scalars only, but the redis-py bridge takes a pool (limits' own docs).
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._windows = MovingWindowRateLimiter(storage)
        self._breaker = breaker

    async def hit(self, policy: Policy, identity: str) -> int | None:
        """Count one request of ``identity`` under ``policy``. Returns None when it is within
        the limit, else the seconds (at least 1) until the window has a place again; a
        refused request is not counted.

        Raises:
            Unreachable: Redis did not answer, or the breaker skipped it.
        """
        if not self._breaker.allows():
            raise Unreachable()
        try:
            if await self._windows.hit(policy.item, policy.name, identity):
                self._breaker.succeeded()
                return None
            stats = await self._windows.get_window_stats(policy.item, policy.name, identity)
        except (RedisError, OSError) as error:
            log.warning("rate limit %s not counted, Redis unreachable: %s", policy.name, error)
            self._breaker.failed()
            raise Unreachable() from error
        self._breaker.succeeded()
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def check(self, group: Group, identities: Mapping[Per, str]) -> Refusal | None:
        """Count one request under each of ``group``'s policies for whom ``identities``
        names, in order, stopping at the first that refuses.

        Raises:
            Unreachable: Redis could not be asked and the group fails closed. A group that
                fails open lets the request through instead.
        """
        for policy in group.policies:
            identity = identities.get(policy.per)
            if identity is None:
                continue
            try:
                wait = await self.hit(policy, identity)
            except Unreachable:
                if group.fail_open:
                    return None
                raise
            if wait is not None:
                metrics.RATE_LIMITED.labels(policy.name).inc()
                return Refusal(policy, wait)
        return None
