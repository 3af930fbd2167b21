"""The worker daemon: an rq worker on Boxoffice's queues, plus the ticker that enqueues the
periodic jobs (outbox relay, hold sweeper, key pruning) and schedules delayed retries.

It outlives Redis outages. rq gives up its work loop at the first Redis error outside a
queue pop; the daemon then waits for Redis with back-off and starts a fresh worker, in the
same process, so an outage of any length ends in service again without a restart loop
(and without the supervisor deciding the daemon is broken). The ticker keeps its own
process across those restarts.
"""

from __future__ import annotations

import logging
import multiprocessing.process
import signal
import threading
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker

from booking.redis_client import sync_client
from daemon.periodic import start_ticker

# Ordered by urgency: a worker always drains holds before the outbox before the rest.
QUEUES = ("holds", "outbox", "default")
WORKER_TTL = 35
# The worker wakes from an empty queue this often, to look after its ticker; and a Redis
# command (the pop included) gets this long before Redis counts as stalled.
DEQUEUE_TIMEOUT = 2
COMMAND_TIMEOUT = DEQUEUE_TIMEOUT + 2.0
# Waiting for Redis after an outage: 0.5 s, doubling, at most this.
MAX_BACKOFF = 5.0

log = logging.getLogger("boxoffice.worker")


def connect(redis_url: str) -> Redis:
    return sync_client(redis_url, command_timeout=COMMAND_TIMEOUT)


def queue(redis: Redis, name: str = "default") -> Queue:
    return Queue(name, connection=redis)


class TickingWorker(SimpleWorker):
    """An rq worker that runs jobs in its own process and keeps its ticker process alive.

    In its own process, not a forked work horse per job: the daemon's jobs are many and
    short (the relay every second, mail in batches), and a fork per job re-imported the PDF
    and font libraries and configured the ORM again every time, which cost more than the
    jobs. A job that hangs is still ended by its timeout (rq's SIGALRM death penalty works
    in the main process), and a worker that dies is restarted by its supervisor; the jobs
    are idempotent, so one interrupted by either runs again.

    Without a ticker no periodic job is enqueued (no outbox relay, no sweeper), and nothing
    else would notice: so between jobs the worker checks the ticker and starts a new one if
    it died. The check runs in the worker's main loop, between jobs.
    """

    def __init__(self, *args: Any, ticker: Ticker | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ticker = ticker

    # rq sizes its pop and its socket timeout from worker_ttl (20 s and 30 s here): a stalled
    # Redis would hang the worker half a minute before it noticed.
    @property
    def dequeue_timeout(self) -> int:
        return DEQUEUE_TIMEOUT

    @property
    def connection_timeout(self) -> int:
        return int(COMMAND_TIMEOUT)

    def check_for_suspension(self, burst: bool) -> None:
        if self.ticker is not None and not self._stop_requested:
            self.ticker.ensure()
        super().check_for_suspension(burst)


class Ticker:
    """The ticker process of a daemon, started again whenever it is found dead."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.process: multiprocessing.process.BaseProcess | None = None

    def ensure(self) -> None:
        if self.process is not None and self.process.is_alive():
            return
        if self.process is not None:
            log.warning("ticker exited (code %s); starting a new one", self.process.exitcode)
        self.process = start_ticker(self.redis_url, QUEUES)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.join(timeout=5)


def run(
    redis_url: str,
    *,
    burst: bool = False,
    name: str | None = None,
    periodic: bool = True,
    logging_level: str = "WARNING",
) -> bool:
    """Work the queues until stopped (SIGTERM: finish the current job, then exit), or, with
    ``burst``, until they are empty. Returns whether any job was processed.

    Jobs are logged at ``logging_level``: the relay runs every second, so INFO shows a line a
    second; WARNING shows failures only.

    Redis errors end a worker, not the daemon: it waits for Redis and works on with a new
    one (named ``name.2``, ``name.3``... when named: the old name may still be registered
    until its heartbeat lapses). Raises RedisError only in ``burst`` mode."""
    ticker = Ticker(redis_url) if periodic and not burst else None
    stopping = threading.Event()
    worked = False
    incarnation = 0
    try:
        while True:
            incarnation += 1
            redis = connect(redis_url)
            worker: TickingWorker | None = None
            try:
                # rq talks to Redis already while making a worker, not only in its loop.
                worker = TickingWorker(
                    [queue(redis, q) for q in QUEUES],
                    connection=redis,
                    name=name if name is None or incarnation == 1 else f"{name}.{incarnation}",
                    worker_ttl=WORKER_TTL,
                    ticker=ticker,
                )
                worked = bool(worker.work(burst=burst, logging_level=logging_level)) or worked
            except RedisError as error:
                if burst:
                    raise
                log.warning("worker stopped by a Redis error: %s", error)
            # A stop signal while idle ends rq's loop without setting _stop_requested; its
            # handler always records when shutdown was asked for.
            if burst or (
                worker is not None and (worker._stop_requested or worker._shutdown_requested_date is not None)
            ):
                return worked
            _wait_for_redis(redis, stopping)
            if stopping.is_set():
                return worked
    finally:
        if ticker is not None:
            ticker.stop()


def _wait_for_redis(redis: Redis, stopping: threading.Event) -> None:
    """Until Redis answers a PING, with back-off; a SIGTERM or SIGINT meanwhile sets
    ``stopping`` and ends the wait."""

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = 0.5
    while not stopping.wait(delay):
        try:
            redis.ping()
        except RedisError as error:
            log.warning("Redis unreachable (%s); trying again in %.1fs", error, min(delay * 2, MAX_BACKOFF))
            delay = min(delay * 2, MAX_BACKOFF)
            continue
        log.warning("Redis is back; starting the worker again")
        return
