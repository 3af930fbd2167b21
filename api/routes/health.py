"""Liveness and readiness, for load balancers and `boxoffice up`."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.schemas import Health


@get(
    "/health",
    tags=["system"],
    summary="Readiness: can this API reach PostgreSQL and Redis?",
    description=(
        "200 `ok` with both; 200 `degraded` without Redis (reads and sales go on from "
        "PostgreSQL, so a load balancer should keep sending traffic); 503 without PostgreSQL."
    ),
)
async def health(request: Request[Any, Any, Any]) -> Response[Health]:
    engine: AsyncEngine = request.app.state.engine
    redis: Redis = request.app.state.redis
    database = "ok"
    cache = "ok"
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError):
        database = "unavailable"
    try:
        await redis.ping()
    except (RedisError, OSError):
        cache = "unavailable"
    ok = database == "ok" and cache == "ok"
    return Response(
        Health(status="ok" if ok else "degraded", database=database, redis=cache),
        status_code=200 if database == "ok" else 503,
    )
