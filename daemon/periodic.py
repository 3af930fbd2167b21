"""Periodic jobs without a cron process: a ticker enqueues each job once per time slot.

The job id is the task and the slot (``tick-sweep-123456``), enqueued with ``unique=True``,
so any number of workers may tick at once and each slot still runs once. The ticker runs in
its own process (a forked rq work horse must never inherit a thread holding a lock), and
dies with the worker that started it.

The ticker is also rq's scheduler: each second it moves jobs whose retry delay is over from
the scheduled registries back onto their queues, under rq's per-queue scheduler locks (so
with several workers, one ticker does it). rq's own scheduler is a second forked process
that exits at the first Redis error and survives a SIGKILLed worker, keeping its locks, so
the next worker would run without one; the ticker rides out Redis errors and dies with its
worker, and a ticker that dies anyway lets its locks lapse within a minute.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.scheduler import RQScheduler

from booking.logs import setup_logging
from booking.redis_client import sync_client
from booking.settings import get_settings
from daemon.lifecycle import die_with_parent
from jobs.heartbeat import TickerBeat

log = logging.getLogger("boxoffice.ticker")


@dataclass(frozen=True)
class Periodic:
    name: str
    every: int  # seconds
    func: str
    queue: str


SWEEP_INTERVAL = 15
PERIODIC: tuple[Periodic, ...] = (
    Periodic("relay", 1, "jobs.outbox.relay_outbox", "outbox"),
    Periodic("sweep", SWEEP_INTERVAL, "jobs.holds.sweep_expired_holds", "holds"),
    Periodic("reconcile-payments", 30, "jobs.payments.reconcile_payments", "default"),
    Periodic("refunds", 60, "jobs.payments.make_refunds", "default"),
    Periodic("prune-idempotency", 3600, "jobs.maintenance.prune_idempotency_keys", "default"),
    Periodic("prune-outbox", 3600, "jobs.maintenance.prune_outbox", "default"),
    # On the most urgent queue: a fan waits a second longer for every second it waits.
    Periodic("admit", 1, "jobs.waiting_room.admit_waiting_fans", "holds"),
    # Paid orders of cancelled events that the cancellation job left, or that were paid after.
    Periodic("cancelled-refunds", 60, "jobs.catalog.refund_cancelled_events", "default"),
)


_BY_NAME = {task.name: task for task in PERIODIC}


def slot_job_id(task: Periodic, now: float) -> str:
    """The job id of ``task``'s slot at ``now``: one job per task and slot, however many tick."""
    return f"tick-{task.name}-{int(now // task.every)}"


def task_of(job_id: str) -> str | None:
    """The periodic task a job id belongs to (``tick-sweep-123456`` -> ``sweep``), or None
    for any other job."""
    if not job_id.startswith("tick-"):
        return None
    name, _, slot = job_id.removeprefix("tick-").rpartition("-")
    return name if name in _BY_NAME and slot.isdigit() else None


def tick(redis: Redis, now: float, tasks: tuple[Periodic, ...] = PERIODIC) -> list[str]:
    """Enqueue every task whose current slot has not been enqueued yet; returns their ids."""
    enqueued = []
    for task in tasks:
        job_id = slot_job_id(task, now)
        try:
            Queue(task.queue, connection=redis).enqueue(
                task.func,
                job_id=job_id,
                unique=True,
                result_ttl=max(task.every * 2, 60),
                failure_ttl=86400,
                job_timeout=max(task.every * 4, 60),
            )
        except DuplicateJobError:
            continue
        enqueued.append(job_id)
    return enqueued


# How often a ticker that lacks a queue's scheduler lock asks for it again (rq's own
# scheduler waits ten minutes; a lock left by a killed ticker lapses after about one).
LOCK_RETRY_SECONDS = 15


class Scheduling:
    """rq's scheduler duties, done a tick at a time in the ticker's process."""

    def __init__(self, redis: Redis, queues: tuple[str, ...]) -> None:
        self.queues = set(queues)
        self.scheduler = RQScheduler(list(queues), connection=redis, logging_level=logging.WARNING)
        self.asked_at = 0.0

    def tick(self, now: float) -> None:
        scheduler = self.scheduler
        if scheduler.acquired_locks != self.queues and now - self.asked_at >= LOCK_RETRY_SECONDS:
            self.asked_at = now
            scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if scheduler.acquired_locks:
            scheduler.heartbeat()  # type: ignore[no-untyped-call]
            scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        with contextlib.suppress(RedisError):  # else they lapse by themselves
            self.scheduler.release_locks()  # type: ignore[no-untyped-call]


def run_ticker(redis_url: str, queues: tuple[str, ...] = (), beat: TickerBeat | None = None) -> None:
    """Tick every second until SIGTERM; with ``beat``, add the ticker's part to its daemon's
    heartbeat every heartbeat interval."""
    die_with_parent()
    # A spawned process starts without logging: the daemon's, from the same environment.
    setup_logging(get_settings())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    redis = sync_client(redis_url)
    scheduling = Scheduling(redis, queues) if queues else None
    failing = False
    beaten = 0.0
    while not stopping:
        try:
            tick(redis, time.time())
            if scheduling is not None:
                scheduling.tick(time.monotonic())
            if beat is not None and time.monotonic() - beaten >= beat.interval:
                held = sorted(scheduling.scheduler.acquired_locks) if scheduling is not None else []
                beat.write(redis, pid=os.getpid(), now=time.time(), scheduling=held)
                beaten = time.monotonic()
            if failing:
                log.warning("Redis is back; ticking again")
            failing = False
        except RedisError as error:  # Redis away: the next tick retries, logged once
            if not failing:
                log.warning("tick skipped, Redis unreachable: %s", error)
            failing = True
        except Exception:
            # Whatever went wrong with this tick, the next second's must still happen.
            log.exception("tick failed")
        time.sleep(1 - time.time() % 1 + 0.01)
    if scheduling is not None:
        scheduling.stop()


def start_ticker(
    redis_url: str, queues: tuple[str, ...] = (), beat: TickerBeat | None = None
) -> multiprocessing.process.BaseProcess:
    """Start a ticker process; with ``queues``, it also schedules their delayed retries; with
    ``beat``, it reports itself in its daemon's heartbeat."""
    process = multiprocessing.get_context("spawn").Process(
        target=run_ticker, args=(redis_url, queues, beat), name="boxoffice-ticker", daemon=True
    )
    process.start()
    return process
