"""Liveness and readiness, for load balancers, orchestrators and `boxoffice up`.

``GET /health`` is liveness: it answers 200 whenever the process and its event loop do, and
touches no other server, so a database or Redis outage never gets healthy processes
restarted. ``GET /ready`` is readiness: PostgreSQL, Redis and the schema's migrations, each
checked within about a second (``booking.ops.readiness``), 200 when all are ok and 503 when
any is not. Both are exempt from the in-flight bound (``api.overload``): a process at its
bound is alive and ready, only busy.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.schemas import (
    DaemonReadiness,
    Liveness,
    MigrationsReadyCheck,
    Readiness,
    ReadyCheck,
    ReadyChecks,
)
from booking.ops.readiness import CHECK_TIMEOUT_SECONDS, Check, check_database_and_migrations, check_redis
from jobs import heartbeat


@get(
    "/health",
    tags=["system"],
    summary="Liveness: is this process serving?",
    description=(
        'Always `200 {"status": "ok"}` while the process serves; it asks nothing of '
        "PostgreSQL or Redis. Use `/ready` to decide whether to send traffic."
    ),
)
async def health() -> Liveness:
    return Liveness(status="ok")


async def _daemons(redis: Redis) -> DaemonReadiness:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            summary = heartbeat.summarize(await heartbeat.read_daemons_async(redis))
    except (TimeoutError, RedisError, OSError):
        summary = heartbeat.UNKNOWN
    return DaemonReadiness(
        status=summary.status.value,
        last_heartbeat_age_seconds=summary.last_heartbeat_age_seconds,
        alive=summary.alive,
        stale=summary.stale,
    )


def _check(check: Check) -> ReadyCheck:
    return ReadyCheck(status=check.status.value, latency_ms=check.latency_ms)  # type: ignore[arg-type]


@get(
    "/ready",
    tags=["system"],
    summary="Readiness: can this process serve — PostgreSQL, Redis and the schema?",
    description=(
        "Checks PostgreSQL (`SELECT 1`), Redis (`PING`) and that the database's migrations are "
        "the ones this code ships, each within about a second. `200` when all are `ok`, `503` "
        "when any is not; the body is the same either way. `daemon` reports the worker daemons' "
        "heartbeats and never changes the status code."
    ),
    responses={
        503: ResponseSpec(
            data_container=Readiness,
            description="Not ready: a check is not `ok` (see `checks`)",
        )
    },
)
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    engine: AsyncEngine = request.app.state.engine
    redis: Redis = request.app.state.redis
    (database, migrations), cache, daemon = await asyncio.gather(
        check_database_and_migrations(engine), check_redis(redis), _daemons(redis)
    )
    ok = database.ok and cache.ok and migrations.ok
    body = Readiness(
        status="ready" if ok else "not_ready",
        checks=ReadyChecks(
            database=_check(database),
            redis=_check(cache),
            migrations=MigrationsReadyCheck(
                status=migrations.status.value,
                latency_ms=migrations.latency_ms,
                database_revision=migrations.database_revision,
                code_revision=migrations.code_revision,
            ),
        ),
        daemon=daemon,
    )
    return Response(body, status_code=200 if ok else 503)
