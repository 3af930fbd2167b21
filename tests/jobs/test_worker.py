from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
from redis import Redis
from rq.job import Job, JobStatus

from daemon.worker import queue


def test_boxoffice_worker_runs_async_jobs_against_the_database(database_url: str, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    job = queue(redis).enqueue("jobs.system.check_database", job_id="check-db-1")
    env = dict(os.environ, BOXOFFICE_DATABASE_URL=database_url, BOXOFFICE_REDIS_URL=redis_url)
    result = subprocess.run(
        [sys.executable, "-m", "console", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    job = Job.fetch("check-db-1", connection=redis)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value()["database_time"]
    # The job ran in a work horse, not in the test process.
    assert job.return_value()["worker_pid"] != os.getpid()


def test_worker_without_redis_says_so_in_one_line(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXOFFICE_")}
    env["BOXOFFICE_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "console", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("boxoffice: no database or Redis configured")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_killed_ticker_is_replaced_and_periodic_jobs_go_on(database_url: str, redis_url: str) -> None:
    env = dict(os.environ, BOXOFFICE_DATABASE_URL=database_url, BOXOFFICE_REDIS_URL=redis_url)
    worker = subprocess.Popen([sys.executable, "-m", "console", "worker"], env=env)
    try:
        first = _wait_for_ticker(worker.pid, exclude=None)
        first.kill()
        second = _wait_for_ticker(worker.pid, exclude=first.pid)
        assert second.pid != first.pid
        # The new ticker enqueues the relay again: a fresh slot appears within seconds.
        redis = Redis.from_url(redis_url)
        seen = _relay_slots(redis)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _relay_slots(redis) <= seen:
            time.sleep(0.5)
        assert _relay_slots(redis) > seen
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _relay_slots(redis: Redis) -> int:
    slots = [int(key.decode().rsplit("-", 1)[1]) for key in redis.scan_iter("rq:job:tick-relay-*")]
    return max(slots, default=0)


def _wait_for_ticker(worker_pid: int, exclude: int | None) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(worker_pid).children():
            if child.pid != exclude and child.is_running() and "multiprocessing" in " ".join(child.cmdline()):
                return child
        time.sleep(0.5)
    raise AssertionError("no ticker process")
