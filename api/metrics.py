"""``GET /metrics``: Prometheus text format, through Litestar's Prometheus plugin.

Three kinds of metric in one scrape:

- HTTP requests, by Litestar's ``PrometheusMiddleware`` (``PROMETHEUS``): a counter, a
  latency histogram and an error (5xx) counter per route template
  (``/holds/{hold_id:uuid}``, never a raw path with an id in it), method and status code.
  Probes and the scrape itself are left out.
- The product's own counters and the database pool's gauges (``booking.metrics``), of this
  process, or of every process on the machine when they share ``PROMETHEUS_MULTIPROC_DIR``.
- What the scrape reads now from PostgreSQL and Redis (``SystemCollector``): the outbox
  backlog, the holds the sweeper has yet to tidy, and the job queues.

The scrape must answer whatever those servers do. Each source is read on a daemon thread of
its own with short client timeouts, and waited for at most ``READ_TIMEOUT_SECONDS`` in all;
a source not read in time is reported ``boxoffice_scrape_source_up 0`` (and counted in
``boxoffice_scrape_errors_total``), its gauges left out, the rest answered as usual. A read
still stuck from an earlier scrape (a frozen server) is waited on again, not doubled by a
new one. The handler runs on a worker thread, never on the event loop that serves fans.

Cost per request: the middleware's counter, histogram and in-progress gauge, no round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from litestar import Litestar, Request, Response
from litestar import get as get_route
from litestar._asgi.utils import wrap_in_exception_handler
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController, PrometheusMiddleware
from litestar.types import ASGIApp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import NullPool

from booking import metrics
from booking.db import make_sync_engine
from booking.ops.gauges import Backlog, read_backlog
from booking.redis_client import sync_client
from jobs.admin import Status, queue_status

log = logging.getLogger("boxoffice.metrics")

# Probes and the scrape: counting them would only measure the monitoring.
UNMEASURED_PATHS = ("/metrics", "/health", "/ready")
# Request latency, in seconds: the buying path answers in milliseconds, overload in seconds.
LATENCY_BUCKETS: list[str | float] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


class RequestMetrics(PrometheusMiddleware):
    """Litestar's request metrics, recording the status of the answer the client gets.

    An error raised by the middleware inside this one (a pool timeout in the idempotency
    middleware's transaction, under overload) would otherwise leave it before any answer
    was sent, and be recorded as a 200; the application's outer handler then answers it.
    So the exception handling Litestar puts around every route handler is put right inside
    this middleware too: the same handlers answer it there, and the 503 is what is counted.
    """

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(wrap_in_exception_handler(app), config)


PROMETHEUS = PrometheusConfig(
    app_name="boxoffice",
    prefix="boxoffice",
    group_path=True,
    exclude=[f"^{path}$" for path in UNMEASURED_PATHS],
    buckets=LATENCY_BUCKETS,
    middleware_class=RequestMetrics,
)

# The whole scrape's wait for PostgreSQL and Redis (read at the same time). Prometheus's
# default scrape timeout is 10 s.
READ_TIMEOUT_SECONDS = 2.0
# A Redis command's timeout for the queue read (a stopped server is noticed this fast); the
# read fails at its first slow command.
REDIS_COMMAND_TIMEOUT_SECONDS = 0.5
# libpq's smallest connect timeout, and the server-side bound on the two statements.
DATABASE_CONNECT_TIMEOUT_SECONDS = 2
DATABASE_STATEMENT_TIMEOUT_MS = 1000

T = TypeVar("T")


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    message = str(orig if orig is not None else error).strip()
    return message.splitlines()[0] if message else type(error).__name__


class _Read(Generic[T]):
    """One read of a source, on a daemon thread (one that hangs on a frozen server must not
    keep the process from exiting)."""

    def __init__(self, read: Callable[[], T]) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, args=(read,), daemon=True, name="metrics-read")
        self._thread.start()

    def _run(self, read: Callable[[], T]) -> None:
        try:
            self.value = read()
        except Exception as error:
            # Whatever stops the read is reported as the source being down, never raised
            # into the scrape.
            self.error = _first_line(error)
        finally:
            self.done.set()


class _Source(Generic[T]):
    """A source the scrape reads: at most one read of it in flight, shared by concurrent
    scrapes and waited on again by the next scrape while it has not finished."""

    def __init__(self, name: str, read: Callable[[], T]) -> None:
        self.name = name
        self._read = read
        self._lock = threading.Lock()
        self._current: _Read[T] | None = None
        self._failing = False

    def start(self) -> _Read[T]:
        with self._lock:
            if self._current is None or self._current.done.is_set():
                self._current = _Read(self._read)
            return self._current

    def finish(self, attempt: _Read[T], deadline: float) -> T | None:
        """The read's value, or None (counted and, when the source was fine before, logged)
        if it failed or did not answer by ``deadline``."""
        attempt.done.wait(max(0.0, deadline - time.monotonic()))
        if attempt.done.is_set() and attempt.error is None:
            if self._failing:
                log.warning("metrics: %s can be read again", self.name)
            self._failing = False
            return attempt.value
        metrics.SCRAPE_ERRORS.labels(self.name).inc()
        if not self._failing:
            why = attempt.error or "no answer in time"
            log.warning("metrics: %s could not be read (%s); its gauges are left out", self.name, why)
        self._failing = True
        return None


class SystemCollector(Collector):
    """Gauges computed at scrape time from PostgreSQL and Redis (see the module docstring).

    It holds its own plain database connections (one per scrape, closed after it) and its own
    Redis client: never a connection of the request pool, which may be exhausted exactly
    when the scrape matters.
    """

    def __init__(self, database_url: str, redis_url: str, *, timeout: float = READ_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._engine = make_sync_engine(
            database_url,
            poolclass=NullPool,
            connect_args={
                "connect_timeout": DATABASE_CONNECT_TIMEOUT_SECONDS,
                "application_name": "boxoffice-metrics",
                "options": f"-c statement_timeout={DATABASE_STATEMENT_TIMEOUT_MS}",
            },
        )
        self._redis = sync_client(redis_url, command_timeout=REDIS_COMMAND_TIMEOUT_SECONDS)
        self._database = _Source("database", self._read_database)
        self._queues = _Source("redis", self._read_queues)

    def _read_database(self) -> Backlog:
        with self._engine.connect() as connection:
            return read_backlog(connection)

    def _read_queues(self) -> Status:
        return queue_status(self._redis)

    def close(self) -> None:
        self._engine.dispose()
        self._redis.close()

    def collect(self) -> Iterable[Metric]:
        deadline = time.monotonic() + self.timeout
        database, queues = self._database.start(), self._queues.start()
        backlog = self._database.finish(database, deadline)
        status = self._queues.finish(queues, deadline)
        up = GaugeMetricFamily(
            "boxoffice_scrape_source_up",
            "Whether this scrape could read the source (database, redis); 0: its gauges are missing.",
            labels=["source"],
        )
        up.add_metric(["database"], 1 if backlog is not None else 0)
        up.add_metric(["redis"], 1 if status is not None else 0)
        yield up
        if backlog is not None:
            yield from _backlog_metrics(backlog)
        if status is not None:
            yield from _queue_metrics(status)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _backlog_metrics(backlog: Backlog) -> Iterable[Metric]:
    yield _gauge(
        "boxoffice_outbox_pending",
        "Outbox rows not relayed yet (confirmation mail, seat-map updates, refunds to make).",
        backlog.outbox_pending,
    )
    yield _gauge(
        "boxoffice_outbox_oldest_pending_age_seconds",
        "Age of the oldest outbox row not relayed yet, by the database clock; 0 when none is pending.",
        backlog.outbox_oldest_age_seconds,
    )
    yield _gauge(
        "boxoffice_holds_live",
        "Holds active, being paid for, or with a failed payment (and so keeping seats).",
        backlog.live_holds,
    )
    yield _gauge(
        "boxoffice_holds_overdue",
        "Active or failed holds past their deadline that the sweeper has not ended yet.",
        backlog.overdue_holds,
    )


def _queue_metrics(status: Status) -> Iterable[Metric]:
    families = {
        "queued": GaugeMetricFamily("boxoffice_queue_depth", "Jobs waiting on the queue.", labels=["queue"]),
        "started": GaugeMetricFamily(
            "boxoffice_queue_started_jobs", "Jobs of the queue being run now.", labels=["queue"]
        ),
        "scheduled": GaugeMetricFamily(
            "boxoffice_queue_scheduled_jobs",
            "Jobs of the queue waiting for their time (retries after a delay).",
            labels=["queue"],
        ),
        "failed": GaugeMetricFamily(
            "boxoffice_queue_failed_jobs",
            "Jobs of the queue that failed for good, kept (a day to a week) for on-call to requeue.",
            labels=["queue"],
        ),
        "oldest": GaugeMetricFamily(
            "boxoffice_queue_oldest_job_age_seconds",
            "How long the next job of the queue has waited; 0 when the queue is empty.",
            labels=["queue"],
        ),
    }
    for queue in status.queues:
        families["queued"].add_metric([queue.name], queue.queued)
        families["started"].add_metric([queue.name], queue.started)
        families["scheduled"].add_metric([queue.name], queue.scheduled)
        families["failed"].add_metric([queue.name], queue.failed)
        families["oldest"].add_metric([queue.name], queue.oldest_queued_age or 0.0)
    yield from families.values()
    yield _gauge("boxoffice_workers", "Job workers registered on Redis.", len(status.workers))


@asynccontextmanager
async def metrics_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open the scrape's collector, and at shutdown close it and drop this process's
    per-process gauges from the shared metrics folder."""
    settings = app.state.settings
    collector = SystemCollector(settings.database_url, settings.redis_url)
    app.state.system_metrics = collector
    try:
        yield
    finally:
        collector.close()
        metrics.process_exited()


class MetricsController(PrometheusController):
    """Litestar's Prometheus endpoint, with the scrape's registry made by Boxoffice: the
    process (or machine) metrics plus the gauges read at scrape time."""

    path = "/metrics"

    # On a worker thread: the collector waits on PostgreSQL and Redis.
    @get_route(sync_to_thread=True, include_in_schema=False)
    def get(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        registry = metrics.scrape_registry(request.app.state.system_metrics)
        # As a header: a media type would get a second charset appended.
        return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
