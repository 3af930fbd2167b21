"""The Litestar application: one factory, used by uvicorn, the tests and `boxoffice serve`."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.config.response_cache import ResponseCacheConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import COMPONENTS, provide_fan
from api.freshness import SeatmapVersions
from api.idempotency import IdempotencyMiddleware, owned_session
from api.metrics import PROMETHEUS, MetricsController, metrics_lifespan
from api.openapi import docs_assets, docs_ui, document_problems
from api.overload import InFlightLimit
from api.problems import exception_handlers, problem_details
from api.rate_limits import RateLimitMiddleware, rate_limits_lifespan
from api.request_id import RequestIdMiddleware
from api.routes.availability import AvailabilityController
from api.routes.box_office import BoxOfficeController
from api.routes.catalog import CatalogController
from api.routes.checkin import CheckinController
from api.routes.events import EventController
from api.routes.fans import FanController
from api.routes.health import health, ready
from api.routes.holds import HoldController
from api.routes.jobs import JobsController, rq_redis_lifespan
from api.routes.ops import OpsController
from api.routes.orders import (
    CheckoutController,
    OrderController,
    TicketController,
    ticket_key_set,
    ticket_public_key,
)
from api.routes.seatmap_stream import SeatmapStreamController
from api.routes.staff import StaffController
from api.routes.waiting_room import QueueController, WaitingRoomStaffController
from api.routes.webhooks import stripe_webhook
from api.seatmap_stream import SeatmapFeed
from api.staff import AuditMiddleware, provide_staff, record_success
from booking import __version__
from booking.accounts.fans import PrincipalCache
from booking.db import MeteredPool, make_async_engine, make_sessionmaker
from booking.inventory.seatmap import LocalSnapshots
from booking.keys import load_signing_keys
from booking.logs import setup_logging
from booking.payments.registry import Gateways
from booking.redis_client import Breaker, async_client
from booking.settings import Settings, get_settings
from booking.waiting_room.service import RoomCache


class MissingServer(Exception):
    """The API was started without a database or Redis URL."""


async def provide_db_session(state: State, request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    """The request's transaction. Routes never commit: it commits here when the route
    returns, and rolls back when it raises. Under an Idempotency-Key the middleware owns the
    session instead, and commits the route's work together with the stored response."""
    owned = owned_session(request.scope)
    if owned is not None:
        yield owned
        await record_success(owned, request.scope)
        return
    async with state.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        # A staff action and its audit row land together or not at all.
        await record_success(session, request.scope)
        await session.commit()


# Objects a request makes before the first generation is collected (the default is 700).
GC_FIRST_GENERATION = 10_000
_gc_settled = False


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off what start-up built.

    A server process imports and builds tens of thousands of long-lived objects (modules,
    the ORM's mappers, the routes, compiled statements), and every full collection walked all
    of them again: a few per cent of the API's CPU during a sale. Frozen once the app is
    built, they are left out of every later collection; the first generation's threshold is
    raised so that a request's short-lived objects are mostly freed by reference counting
    before a collection runs at all. Once per process: a process that builds many apps (the
    tests) freezes only what the first one left.
    """
    global _gc_settled
    if _gc_settled:
        return
    _gc_settled = True
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION, second, third)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API for ``settings`` (default: the environment).

    Raises:
        MissingServer: no database or Redis URL is configured; the API never starts the
            embedded servers itself (``boxoffice up`` does, and passes their URLs).
    """
    settings = settings or get_settings()
    # The factory is what every server process (each uvicorn or granian worker) runs.
    setup_logging(settings)
    if settings.database_url is None or settings.redis_url is None:
        raise MissingServer("the API needs BOXOFFICE_DATABASE_URL and BOXOFFICE_REDIS_URL")
    database_url, redis_url = settings.database_url, settings.redis_url
    seatmap_feed = SeatmapFeed(redis_url)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # A bounded pool with a short wait: a burst beyond it is answered 503 at once (see
        # api.overload), never queued into 30-second timeouts.
        engine = make_async_engine(
            database_url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            pool_timeout=settings.db_pool_timeout_seconds,
            poolclass=MeteredPool,
        )
        redis = async_client(redis_url)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.gateways = Gateways(settings, app.state.sessionmaker)
        app.state.redis = redis
        app.state.redis_breaker = Breaker()
        app.state.local_seatmaps = LocalSnapshots()
        # Which events sell through a waiting room, read from PostgreSQL about once a second.
        app.state.waiting_rooms = RoomCache()
        settle_garbage_collector()
        try:
            yield
        finally:
            await app.state.gateways.aclose()
            await redis.aclose()
            await engine.dispose()

    app = Litestar(
        route_handlers=[
            health,
            ready,
            EventController,
            FanController,
            HoldController,
            CheckoutController,
            OrderController,
            TicketController,
            ticket_public_key,
            ticket_key_set,
            AvailabilityController,
            stripe_webhook,
            StaffController,
            BoxOfficeController,
            OpsController,
            CheckinController,
            JobsController,
            MetricsController,
            # The docs page's scripts and styles: /schema works without internet access.
            docs_assets(),
            SeatmapStreamController,
            QueueController,
            WaitingRoomStaffController,
            CatalogController,
        ],
        dependencies={
            "db_session": Provide(provide_db_session),
            "fan": Provide(provide_fan),
            "staff": Provide(provide_staff),
        },
        lifespan=[lifespan, rq_redis_lifespan, metrics_lifespan, rate_limits_lifespan],
        # The in-flight bound first, so a refused request costs nothing else. The seat-map
        # bump next: it sees every commit of the request before the answer leaves. Audit
        # then: it sees the final answer, including an idempotency replay or 409.
        middleware=[
            # Request metrics outermost: they see every answer, a refusal at the bound too.
            PROMETHEUS.middleware,
            InFlightLimit(settings.max_in_flight),
            # Before the key's stored answer: a refusal is not what a retry replays.
            RateLimitMiddleware(),
            SeatmapVersions(),
            AuditMiddleware(),
            IdempotencyMiddleware(),
        ],
        # The live seat-map feed: one Redis reader per process, fanned out in memory.
        plugins=[problem_details, seatmap_feed.plugin],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        # Logging is booking.logs' (one shape for every line); Litestar's own would take
        # over the root logger.
        logging_config=None,
        # ``cache=True`` routes (an event's detail and availability) are at most a second old.
        response_cache_config=ResponseCacheConfig(default_expiration=1),
        openapi_config=OpenAPIConfig(
            title="Boxoffice",
            version=__version__,
            description="Tickets for high-demand events: discovery, seat maps, holds, checkout, orders.",
            path="/schema",
            components=COMPONENTS,
            render_plugins=docs_ui(),
        ),
        state=State(
            {
                "settings": settings,
                "signing_keys": load_signing_keys(settings),
                "fan_principals": PrincipalCache(),
                "seatmap_feed": seatmap_feed,
            }
        ),
    )
    document_problems(app)
    # The request id wraps the whole application, outside the middleware above: an error
    # raised in a middleware (a pool timeout in the idempotency middleware's transaction)
    # is answered by the application's outer exception handler, and an unknown path by
    # the router, and those answers and their log lines carry the id too.
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    return app
