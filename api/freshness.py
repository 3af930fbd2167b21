"""A request that changes inventory moves the event's seat-map version before it answers.

So a fan who holds a seat and then reloads the map sees it taken, and the map moves with
the sale even while the worker that relays ``units.changed`` is stopped or behind (see
``booking.inventory.changes``). The bump is best effort: with Redis unreachable it is
skipped (the map is then served from PostgreSQL anyway) and the relay makes up for it.
"""

from __future__ import annotations

import logging
import uuid

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from booking.inventory import changes
from booking.inventory.seatmap import version_key
from booking.redis_client import Breaker

log = logging.getLogger("boxoffice.api")
READS = frozenset({"GET", "HEAD", "OPTIONS"})


class SeatmapVersions(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope.get("method") in READS:
            await next_app(scope, receive, send)
            return
        state = scope["litestar_app"].state
        with changes.collecting() as changed:

            async def bump_then_send(message: Message) -> None:
                if message["type"] == "http.response.start" and changed:
                    await _bump(state.redis, state.redis_breaker, sorted(changed, key=str))
                    changed.clear()
                await send(message)

            await next_app(scope, receive, bump_then_send)


async def _bump(redis: Redis, breaker: Breaker, events: list[uuid.UUID]) -> None:
    if not breaker.allows():
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for event_id in events:
                pipe.incr(version_key(event_id))
            await pipe.execute()
    except RedisError as error:
        log.warning("seat-map version not bumped, Redis unreachable: %s", error)
        breaker.failed()
    else:
        breaker.succeeded()
