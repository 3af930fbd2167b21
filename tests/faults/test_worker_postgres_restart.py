"""PostgreSQL restarted (fast shutdown) under a running worker daemon.

The daemon's jobs share pooled connections, which the restart closes on the server's side.
Jobs caught by the restart itself may fail (they are retried by their next slot); a job
that starts once the server is back must not fail on a connection the server had closed.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from console.stack import EmbeddedPostgres
from daemon.worker import queue
from jobs.queues import QUEUES
from tests.faults.conftest import start_worker
from tests.faults.test_postgres_restart import _restart

pytestmark = pytest.mark.slow


def _finished(redis: Redis, seconds: float = 30) -> Job:
    job = queue(redis).enqueue("tests.jobs.probe_jobs.backend_pid")
    deadline = time.monotonic() + seconds
    while job.get_status() not in (JobStatus.FINISHED, JobStatus.FAILED) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.get_status() == JobStatus.FINISHED, job.latest_result()
    return job


def _failed_since(redis: Redis, since: dt.datetime) -> list[str]:
    failed = []
    for name in QUEUES:
        for job_id in FailedJobRegistry(name, connection=redis).get_job_ids():
            job = Job.fetch(job_id, connection=redis)
            started = job.started_at
            if started is not None and started.replace(tzinfo=started.tzinfo or dt.UTC) >= since:
                result = job.latest_result()
                failed.append(f"{job.func_name}: {result.exc_string if result else '?'}")
    return failed


def test_jobs_after_a_restart_run_on_new_connections_without_failing(
    own_postgres: tuple[EmbeddedPostgres, str],
    redis_url: str,
    worker_factory: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    server, database_url = own_postgres
    redis = Redis.from_url(redis_url)
    worker = start_worker(database_url, redis_url, log=tmp_path / "worker.log")
    worker_factory.append(worker)
    before = _finished(redis, seconds=60).return_value()["pid"]
    # The periodic jobs (relay, admission tick) keep their pooled connections meanwhile.
    time.sleep(2)
    _restart(server)
    back = dt.datetime.now(dt.UTC)
    # Long enough for every periodic job of the second to come round on the old pool.
    time.sleep(3)
    after = _finished(redis).return_value()["pid"]
    assert after != before
    assert worker.poll() is None
    assert _failed_since(redis, back) == []
