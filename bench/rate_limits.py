"""What the rate limits cost a request: microseconds per request, timeit-style.

    python bench/rate_limits.py [--requests 5000]

Three numbers, each the mean over ``--requests`` sequential calls on one event loop, in wall
time and in this process's CPU time (what the API process spends; the rest is Redis's):

- hit: one ``Limiter.hit`` (the moving window's Lua script, one Redis round trip);
- middleware, limited: ``RateLimitMiddleware`` in front of a route that does nothing, for a
  hold's group (per address, then per fan: two round trips; the fan from the process's
  token cache, as after a fan's first request), minus the same route with the limits off;
- middleware, unlimited route: a route without ``opt={"rate_limit": ...}`` (the cost every
  other route pays), minus the route called bare.

Limits are set far above what the run sends, so nothing is refused. Uses
BOXOFFICE_TEST_REDIS_URL (a database nothing else uses: it is flushed), else an embedded
Valkey. Prints the numbers; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from litestar import Litestar, post  # noqa: E402
from litestar.datastructures import State  # noqa: E402

from api.rate_limits import RateLimitMiddleware, rate_limits_lifespan  # noqa: E402
from booking.accounts.fans import TOKEN_PREFIX, Principal, PrincipalCache  # noqa: E402
from booking.rate_limits import Limiter, Policy  # noqa: E402
from booking.redis_client import Breaker, async_client  # noqa: E402
from booking.settings import Settings  # noqa: E402
from console.stack import EmbeddedValkey  # noqa: E402

HIGH = "1000000/hour"


@post("/limited", opt={"rate_limit": "hold"}, status_code=200)
async def limited() -> None:
    return None


@post("/plain", status_code=200)
async def plain() -> None:
    return None


def _app(settings: Settings, redis_url: str, *, middleware: bool) -> Litestar:
    def redis_lifespan(app: Litestar) -> _RedisState:
        return _RedisState(app, redis_url)

    return Litestar(
        route_handlers=[limited, plain],
        middleware=[RateLimitMiddleware()] if middleware else [],
        lifespan=[redis_lifespan, rate_limits_lifespan],
        state=State({"settings": settings, "fan_principals": PrincipalCache(ttl=3600)}),
        logging_config=None,
        openapi_config=None,
    )


class _RedisState:
    """``app.state.redis`` and its breaker, as the API's own lifespan makes them."""

    def __init__(self, app: Litestar, url: str) -> None:
        self.app, self.url = app, url

    async def __aenter__(self) -> None:
        self.app.state.redis = async_client(self.url)
        self.app.state.redis_breaker = Breaker()

    async def __aexit__(self, *exc: object) -> None:
        await self.app.state.redis.aclose()


async def _call(app: Litestar, path: str, token: str) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"content-length", b"0")],
        "client": ("203.0.113.9", 40000),
        "server": ("127.0.0.1", 8000),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)  # type: ignore[arg-type]
    assert status == 200, status


async def _mean_us(requests: int, call: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(wall, CPU of this process) microseconds per call."""
    for _ in range(min(200, requests)):  # warm: connections, scripts loaded, caches
        await call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        await call()
    return (time.perf_counter() - wall) / requests * 1e6, (time.process_time() - cpu) / requests * 1e6


def _minus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] - b[0], a[1] - b[1]


async def measure(redis_url: str, requests: int) -> dict[str, tuple[float, float]]:
    limits = {f"rate_limit_{g}_per_{p}": HIGH for g in ("hold",) for p in ("fan", "address")}
    on = Settings(redis_url=redis_url, rate_limits=True, **limits)
    off = Settings(redis_url=redis_url, rate_limits=False)
    token = TOKEN_PREFIX + uuid.uuid4().hex
    principal = Principal(fan_id=uuid.uuid4(), session_id=uuid.uuid4())
    found: dict[str, tuple[float, float]] = {}

    redis = async_client(redis_url)
    await redis.flushdb()
    limiter = Limiter(redis, Breaker())
    policy = Policy("bench-per-fan", 1_000_000, 3600, "fan")
    found["hit"] = await _mean_us(requests, lambda: _hit(limiter, policy))
    await redis.aclose()

    async def timed(settings: Settings, path: str, *, middleware: bool = True) -> tuple[float, float]:
        app = _app(settings, redis_url, middleware=middleware)
        async with app.lifespan():
            app.state.fan_principals.put(token, principal, time.monotonic())
            return await _mean_us(requests, lambda: _call(app, path, token))

    limited_on, limited_off = await timed(on, "/limited"), await timed(off, "/limited")
    plain_on, bare = await timed(on, "/plain"), await timed(on, "/plain", middleware=False)
    found["middleware, limited route"] = _minus(limited_on, limited_off)
    found["middleware, unlimited route"] = _minus(plain_on, bare)
    found["route alone (for scale)"] = bare
    return found


async def _hit(limiter: Limiter, policy: Policy) -> None:
    assert await limiter.hit(policy, "one-fan") is None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    configured = os.environ.get("BOXOFFICE_TEST_REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="bench-rate-limits-") as folder:
        server = None if configured else EmbeddedValkey(Path(folder))
        url = configured or server.start()  # type: ignore[union-attr]
        try:
            found = asyncio.run(measure(url, args.requests))
        finally:
            if server is not None:
                server.stop()
    print(f"{'':32} {'wall':>8} {'CPU':>8}  (µs per request)")
    for name, (wall, cpu) in found.items():
        print(f"{name:32} {wall:8.1f} {cpu:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
