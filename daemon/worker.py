"""The worker daemon: ``rq worker --with-scheduler`` on Boxoffice's queues, plus the ticker
that enqueues the periodic jobs (outbox relay, hold sweeper, key pruning)."""

from __future__ import annotations

from redis import Redis
from rq import Queue, Worker

from daemon.periodic import start_ticker

# Ordered by urgency: a worker always drains holds before the outbox before the rest.
QUEUES = ("holds", "outbox", "default")


def connect(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


def queue(redis: Redis, name: str = "default") -> Queue:
    return Queue(name, connection=redis)


def run(redis_url: str, *, burst: bool = False, name: str | None = None, periodic: bool = True) -> bool:
    """Work the queues until stopped (SIGTERM: finish the current job, then exit), or, with
    ``burst``, until they are empty. Returns whether any job was processed."""
    redis = connect(redis_url)
    ticker = start_ticker(redis_url) if periodic and not burst else None
    try:
        worker = Worker([queue(redis, q) for q in QUEUES], connection=redis, name=name)
        return bool(worker.work(burst=burst, with_scheduler=True, logging_level="INFO"))
    finally:
        if ticker is not None:
            ticker.terminate()
            ticker.join(timeout=5)
