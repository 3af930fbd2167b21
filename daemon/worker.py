"""The worker daemon: an rq worker on Boxoffice's queues, plus the ticker that enqueues the
periodic jobs (outbox relay, hold sweeper, key pruning, waiting-room admission) and schedules
delayed retries.

It outlives Redis outages. rq gives up its work loop at the first Redis error outside a
queue pop; the daemon then waits for Redis with back-off and starts a fresh worker, in the
same process, so an outage of any length ends in service again without a restart loop
(and without the supervisor deciding the daemon is broken). The ticker keeps its own
process across those restarts.

Every daemon beats: a heartbeat thread rewrites its record in Redis every few seconds (see
``jobs.heartbeat``), with its worker's state and the last success of each periodic task, so
``GET /ready`` and ``boxoffice status`` can tell a daemon at work from one that is gone.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing.process
import signal
import threading
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import StartedJobRegistry

from booking import metrics
from booking.logs import log_scope
from booking.redis_client import sync_client
from daemon.periodic import start_ticker, task_of
from jobs.db import JobLoop
from jobs.heartbeat import DEFAULT_INTERVAL, Heartbeat, TickerBeat
from jobs.queues import QUEUES

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


class LoopJob(Job):
    """A job whose coroutine runs on its worker's ``JobLoop`` rather than on a new loop of
    its own (RQ's ``asyncio.run``), so the jobs of one worker share a loop and the database
    pool that belongs to it. Without a loop (a worker of another kind fetched it) it runs
    as any RQ job."""

    job_loop: JobLoop | None = None

    def _execute(self) -> Any:
        # RQ's Job._execute, with the loop the worker handed over in place of asyncio.run.
        if self.job_loop is None:
            return super()._execute()
        if not self.func:
            raise ValueError("Cannot execute job: function is None")
        result = self.func(*self.args, **self.kwargs)
        if asyncio.iscoroutine(result):
            return self.job_loop.run(result)
        return result


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

    Its async jobs all run on one event loop of the worker's (see ``jobs.db.JobLoop``), and
    so share a small database pool instead of connecting once per job; the loop and its
    connections are closed when the worker stops.
    """

    job_class = LoopJob

    def __init__(
        self, *args: Any, ticker: Ticker | None = None, beats: Heartbeat | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ticker = ticker
        # Not ``heartbeat``: that is RQ's own method, renewing the worker's registration.
        self.beats = beats
        self.job_loop = JobLoop()

    def work(self, *args: Any, **kwargs: Any) -> bool:
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            self.job_loop.close()

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

    def execute_job(self, job: Job, queue: Queue) -> None:
        # Every line logged while the job runs, its own and rq's about it (a failure's
        # traceback too), names the job; the job's code binds its holds and orders to it.
        if isinstance(job, LoopJob):
            job.job_loop = self.job_loop
        with log_scope(job_id=job.id, job_func=job.func_name):
            super().execute_job(job, queue)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, *args: Any, **kwargs: Any
    ) -> None:
        super().handle_job_success(job, queue, started_job_registry, *args, **kwargs)
        # Noted after RQ has recorded the success, so a run counted here really finished.
        task = task_of(job.id)
        if task is not None and self.beats is not None:
            self.beats.note_success(task)


class Ticker:
    """The ticker process of a daemon, started again whenever it is found dead."""

    def __init__(self, redis_url: str, beat: TickerBeat | None = None) -> None:
        self.redis_url = redis_url
        self.beat = beat
        self.process: multiprocessing.process.BaseProcess | None = None

    def ensure(self) -> None:
        if self.process is not None and self.process.is_alive():
            return
        if self.process is not None:
            log.warning("ticker exited (code %s); starting a new one", self.process.exitcode)
        self.process = start_ticker(self.redis_url, QUEUES, self.beat)

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
    heartbeat_seconds: float = DEFAULT_INTERVAL,
) -> bool:
    """Work the queues until stopped (SIGTERM: finish the current job, then exit), or, with
    ``burst``, until they are empty. Returns whether any job was processed.

    Jobs are logged at ``logging_level``: the relay runs every second, so INFO shows a line a
    second; WARNING shows failures only.

    Redis errors end a worker, not the daemon: it waits for Redis and works on with a new
    one (named ``name.2``, ``name.3``... when named: the old name may still be registered
    until its heartbeat lapses). Raises RedisError only in ``burst`` mode.

    Unless in ``burst`` mode, the daemon's heartbeat is written every ``heartbeat_seconds``
    from start to stop, across worker restarts, and deleted on the way out."""
    heartbeat = None if burst else Heartbeat(redis_url, QUEUES, interval=heartbeat_seconds)
    ticker = Ticker(redis_url, heartbeat.ticker if heartbeat else None) if periodic and not burst else None
    if heartbeat is not None:
        heartbeat.start()
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
                    beats=heartbeat,
                )
                if heartbeat is not None:
                    heartbeat.attach(worker)
                worked = bool(worker.work(burst=burst, logging_level=logging_level)) or worked
            except RedisError as error:
                if burst:
                    raise
                log.warning("worker stopped by a Redis error: %s", error)
            if heartbeat is not None:
                heartbeat.detach("waiting for redis")
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
        # The ticker first: it writes to the heartbeat record, which must not outlive us.
        if ticker is not None:
            ticker.stop()
        if heartbeat is not None:
            heartbeat.stop()
        # Its counters stay counted in a shared metrics folder; its per-process gauges go.
        metrics.process_exited()


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
