"""The daemon's worker runs its async jobs on one event loop with one small database pool:
consecutive jobs share a PostgreSQL connection, and a job that failed or timed out leaves
neither the loop nor the pool broken for the next one. Elsewhere a job still opens (and
closes) a connection of its own.

The worker runs in the test's process (in burst mode), so the tests can look at what it
kept; RQ's timeouts are SIGALRM there, as in the daemon."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from redis import Redis
from rq import SimpleWorker
from rq.job import Job, JobStatus

from daemon.worker import TickingWorker, queue
from tests.conftest import _conninfo
from tests.jobs import probe_jobs

PROBES = "tests.jobs.probe_jobs"


@pytest.fixture
def redis(redis_url: str, job_env: None) -> Iterator[Redis]:
    # The worker installs its signal handlers in this process; they go with it.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.fixture
def watcher(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(_conninfo(database_url), autocommit=True) as connection:
        yield connection


def _run(
    redis: Redis, *jobs: tuple[str, int | None], worker_class: type[SimpleWorker] = TickingWorker
) -> list[Job]:
    """Enqueue ``jobs`` (function name in probe_jobs, timeout) and work them off in order."""
    q = queue(redis)
    enqueued = [q.enqueue(f"{PROBES}.{name}", job_timeout=timeout) for name, timeout in jobs]
    worker_class([q], connection=redis).work(burst=True, logging_level="WARNING")
    for job in enqueued:
        job.refresh()
    return enqueued


def _pid(job: Job) -> int:
    assert job.get_status() == JobStatus.FINISHED, job.latest_result()
    result = job.return_value()
    # Nothing of a failed job's transaction is visible to the next job on its connection.
    assert result["leftover"] is None
    return int(result["pid"])


def _failed_with(job: Job, error: str) -> None:
    assert job.get_status() == JobStatus.FAILED
    result = job.latest_result()
    assert result is not None
    assert result.exc_string is not None
    assert result.exc_string.strip().splitlines()[-1].startswith(error), result.exc_string


def _backends(watcher: psycopg.Connection[tuple[Any, ...]], seconds: float = 5.0) -> int:
    """The other connections to the test's database, once none is closing any more: a
    connection closed by the client goes from the server a moment later."""
    deadline = time.monotonic() + seconds
    while True:
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        assert row is not None
        if row[0] == 0 or time.monotonic() > deadline:
            return int(row[0])
        time.sleep(0.1)


def test_consecutive_jobs_share_one_connection_closed_when_the_worker_stops(
    redis: Redis, watcher: psycopg.Connection[tuple[Any, ...]]
) -> None:
    jobs = _run(redis, *[("backend_pid", None)] * 5)
    # One server process (one session) for all five, not one a job.
    assert len({_pid(job) for job in jobs}) == 1
    # The worker stopped: its loop and its connection are gone.
    assert _backends(watcher) == 0


def test_after_a_job_that_raised_the_next_runs_on_the_same_connection_rolled_back(redis: Redis) -> None:
    first, failed, after = _run(
        redis, ("backend_pid", None), ("raise_in_transaction", None), ("backend_pid", None)
    )
    _failed_with(failed, "ValueError: the job failed in its transaction")
    assert _pid(after) == _pid(first)


def test_tasks_a_failed_job_left_are_cancelled_and_their_connection_returned(
    redis: Redis, watcher: psycopg.Connection[tuple[Any, ...]]
) -> None:
    probe_jobs.LEFT_BEHIND.clear()
    failed, after, again = _run(
        redis, ("raise_leaving_a_task", None), ("backend_pid", None), ("backend_pid", None)
    )
    _failed_with(failed, "ValueError: the job failed with a task still running")
    assert probe_jobs.LEFT_BEHIND == ["ended"]
    # The task's connection went back to the pool, its transaction rolled back, and serves on.
    assert _pid(after) == _pid(again)
    assert _backends(watcher) == 0


@pytest.mark.parametrize("name", ["wait_on_the_database", "compute_in_transaction"])
def test_after_a_job_that_timed_out_the_next_runs_on_a_new_loop_and_connection(
    redis: Redis, watcher: psycopg.Connection[tuple[Any, ...]], name: str
) -> None:
    first, timed_out, after, again = _run(
        redis, ("backend_pid", None), (name, 1), ("backend_pid", None), ("backend_pid", None)
    )
    _failed_with(timed_out, "rq.timeouts.JobTimeoutException")
    # Loop and pool were thrown away with the job that timed out; the new ones serve on.
    assert _pid(after) != _pid(first)
    assert _pid(again) == _pid(after)
    # The timed-out job's connection was closed, its statement not left running.
    assert _backends(watcher) == 0


def test_without_the_daemon_loop_each_job_has_a_connection_of_its_own(
    redis: Redis, watcher: psycopg.Connection[tuple[Any, ...]]
) -> None:
    # A plain RQ worker runs each coroutine with asyncio.run, on a loop of its own.
    first, second = _run(redis, ("backend_pid", None), ("backend_pid", None), worker_class=SimpleWorker)
    assert _pid(first) != _pid(second)
    assert _backends(watcher) == 0


async def test_a_job_called_directly_opens_and_closes_its_own_connection(
    job_env: None, watcher: psycopg.Connection[tuple[Any, ...]]
) -> None:
    first = await probe_jobs.backend_pid()
    second = await probe_jobs.backend_pid()
    assert first["pid"] != second["pid"]
    assert _backends(watcher) == 0
