"""The worker daemon: ``rq worker --with-scheduler`` on Boxoffice's queues, plus the ticker
that enqueues the periodic jobs (outbox relay, hold sweeper, key pruning)."""

from __future__ import annotations

import logging
import multiprocessing.process
from typing import Any

from redis import Redis
from rq import Queue, SimpleWorker

from daemon.periodic import start_ticker

# Ordered by urgency: a worker always drains holds before the outbox before the rest.
QUEUES = ("holds", "outbox", "default")
# The worker wakes from an empty queue at least this often (rq waits worker_ttl - 15 s), so
# a dead ticker is noticed and restarted within about 20 s.
WORKER_TTL = 35

log = logging.getLogger("boxoffice.worker")


def connect(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


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

    def __init__(self, *args: Any, ticker_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ticker_url = ticker_url
        self.ticker: multiprocessing.process.BaseProcess | None = None

    def ensure_ticker(self) -> None:
        if self.ticker_url is None or self._stop_requested:
            return
        if self.ticker is not None and self.ticker.is_alive():
            return
        if self.ticker is not None:
            log.warning("ticker exited (code %s); starting a new one", self.ticker.exitcode)
        self.ticker = start_ticker(self.ticker_url)

    def stop_ticker(self) -> None:
        if self.ticker is not None:
            self.ticker.terminate()
            self.ticker.join(timeout=5)

    def check_for_suspension(self, burst: bool) -> None:
        self.ensure_ticker()
        super().check_for_suspension(burst)


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
    second; WARNING shows failures only."""
    redis = connect(redis_url)
    worker = TickingWorker(
        [queue(redis, q) for q in QUEUES],
        connection=redis,
        name=name,
        worker_ttl=WORKER_TTL,
        ticker_url=redis_url if periodic and not burst else None,
    )
    try:
        return bool(worker.work(burst=burst, with_scheduler=True, logging_level=logging_level))
    finally:
        worker.stop_ticker()
