"""Periodic jobs without a cron process: a ticker enqueues each job once per time slot.

The job id is the task and the slot (``tick-sweep-123456``), enqueued with ``unique=True``,
so any number of workers may tick at once and each slot still runs once. The ticker runs in
its own process (a forked rq work horse must never inherit a thread holding a lock), and
dies with the worker that started it.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError

from daemon.lifecycle import die_with_parent

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
)


def tick(redis: Redis, now: float, tasks: tuple[Periodic, ...] = PERIODIC) -> list[str]:
    """Enqueue every task whose current slot has not been enqueued yet; returns their ids."""
    enqueued = []
    for task in tasks:
        job_id = f"tick-{task.name}-{int(now // task.every)}"
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


def run_ticker(redis_url: str) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    redis = Redis.from_url(redis_url)
    while not stopping:
        try:
            tick(redis, time.time())
        except RedisError as error:  # Redis away for a moment: the next tick retries
            log.warning("tick skipped: %s", error)
        except Exception:
            # Whatever went wrong with this tick, the next second's must still happen.
            log.exception("tick failed")
        time.sleep(1 - time.time() % 1 + 0.01)


def start_ticker(redis_url: str) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=run_ticker, args=(redis_url,), name="boxoffice-ticker", daemon=True
    )
    process.start()
    return process
