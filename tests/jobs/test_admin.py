"""Queue administration against a real Redis: depths, failed jobs, requeue, delete, drain,
and the registry guard that keeps concurrent operators from running a job twice."""

from __future__ import annotations

import datetime as dt
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import Redis
from rq import Queue, Worker, get_current_job
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from booking.errors import JobNotFailed, JobNotFound, UnknownQueue
from jobs import admin

pytestmark = pytest.mark.usefixtures("job_env")
BAD_HOLD_ID = "not-a-uuid"


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def refill(queue_name: str) -> str:
    """A job that adds another like it to its queue, as the ticker keeps adding work."""
    job = get_current_job()
    assert job is not None
    Queue(queue_name, connection=job.connection).enqueue(refill, queue_name)
    return "refilled"


def fail_job(redis: Redis, job_id: str, queue: str = "holds") -> Job:
    """A real job of ours that fails: expiring a hold whose id is not a uuid."""
    Queue(queue, connection=redis).enqueue("jobs.holds.expire_hold", BAD_HOLD_ID, job_id=job_id)
    result = admin.drain(redis, queue)
    assert (result.done, result.failed) == (1, 1)
    return Job.fetch(job_id, connection=redis)


def test_status_counts_every_queue_and_registry_and_lists_workers(redis: Redis) -> None:
    default = Queue("default", connection=redis)
    default.enqueue("jobs.system.check_database", job_id="first")
    default.enqueue("jobs.system.check_database", job_id="second")
    Queue("holds", connection=redis).enqueue_in(
        dt.timedelta(minutes=5), "jobs.holds.expire_hold", "x", job_id="later"
    )
    fail_job(redis, "broken", queue="outbox")
    worker = Worker(["holds", "default"], connection=redis, name="w-status")
    worker.register_birth()
    try:
        status = admin.queue_status(redis)
    finally:
        worker.register_death()

    by_name = {q.name: q for q in status.queues}
    assert list(by_name) == ["holds", "outbox", "default"]
    assert (by_name["default"].queued, by_name["default"].failed) == (2, 0)
    assert by_name["default"].oldest_queued_age is not None
    assert 0 <= by_name["default"].oldest_queued_age < 60
    assert (by_name["holds"].queued, by_name["holds"].scheduled) == (0, 1)
    assert by_name["holds"].oldest_queued_age is None
    assert (by_name["outbox"].queued, by_name["outbox"].failed) == (0, 1)
    (listed,) = status.workers
    assert listed.name == "w-status"
    assert listed.queues == ["holds", "default"]
    assert listed.current_job is None
    assert listed.birth is not None
    assert listed.last_heartbeat is not None


def test_failed_jobs_name_the_function_args_and_the_last_line_of_the_error(redis: Redis) -> None:
    fail_job(redis, "broken-1")
    fail_job(redis, "broken-2", queue="default")

    everything = admin.failed_jobs(redis)
    assert [job.id for job in everything] == ["broken-2", "broken-1"]  # the latest failure first
    first = everything[1]
    assert first.queue == "holds"
    assert first.function == "jobs.holds.expire_hold"
    assert first.args == repr(BAD_HOLD_ID)
    assert str(first.error).startswith("ValueError: badly formed")
    assert first.enqueued_at is not None
    assert first.ended_at is not None
    assert first.enqueued_at <= first.ended_at

    assert [job.id for job in admin.failed_jobs(redis, queue="holds")] == ["broken-1"]
    assert [job.id for job in admin.failed_jobs(redis, limit=1)] == ["broken-2"]
    with pytest.raises(UnknownQueue, match="holds, outbox, default"):
        admin.failed_jobs(redis, queue="nowhere")


def test_requeue_puts_a_failed_job_back_once(redis: Redis) -> None:
    fail_job(redis, "broken")
    assert admin.requeue(redis, "broken") == admin.RequeuedJob("broken", "holds")
    assert Queue("holds", connection=redis).job_ids == ["broken"]
    assert admin.failed_jobs(redis) == []
    with pytest.raises(JobNotFailed, match="is queued, not failed"):
        admin.requeue(redis, "broken")
    assert Queue("holds", connection=redis).job_ids == ["broken"]


@pytest.mark.parametrize("job_id", ["never-was", "bad id!", "x" * 200, "a:b"])
def test_unknown_or_impossible_job_ids_are_not_found(redis: Redis, job_id: str) -> None:
    with pytest.raises(JobNotFound):
        admin.requeue(redis, job_id)
    with pytest.raises(JobNotFound):
        admin.delete_failed(redis, job_id)


def test_jobs_of_queues_that_are_not_ours_are_not_found(redis: Redis) -> None:
    Queue("elsewhere", connection=redis).enqueue("jobs.system.check_database", job_id="foreign")
    with pytest.raises(JobNotFound):
        admin.delete_failed(redis, "foreign")
    assert Job.exists("foreign", connection=redis)


def test_delete_removes_a_failed_job_and_leaves_others_alone(redis: Redis) -> None:
    fail_job(redis, "broken")
    Queue("default", connection=redis).enqueue("jobs.system.check_database", job_id="waiting")
    admin.delete_failed(redis, "broken")
    assert not Job.exists("broken", connection=redis)
    assert admin.queue_status(redis).queues[0].failed == 0
    with pytest.raises(JobNotFound):
        admin.delete_failed(redis, "broken")
    with pytest.raises(JobNotFailed, match="is queued"):
        admin.delete_failed(redis, "waiting")
    assert Queue("default", connection=redis).job_ids == ["waiting"]


def test_requeue_all_counts_what_it_requeued_and_drops_expired_entries(redis: Redis) -> None:
    fail_job(redis, "a")
    fail_job(redis, "b")
    fail_job(redis, "c", queue="default")
    # An entry whose job data has already expired: nothing left to run.
    redis.zadd(FailedJobRegistry("default", connection=redis).key, {"ghost": 9e9})
    assert admin.requeue_all(redis, queue="holds") == 2
    assert sorted(Queue("holds", connection=redis).job_ids) == ["a", "b"]
    assert admin.requeue_all(redis) == 1
    assert FailedJobRegistry("default", connection=redis).get_job_ids() == []
    assert admin.requeue_all(redis) == 0
    with pytest.raises(UnknownQueue):
        admin.requeue_all(redis, queue="nowhere")


def test_drain_runs_the_queue_here_and_reports_after_each_job(redis: Redis) -> None:
    queue = Queue("default", connection=redis)
    queue.enqueue("jobs.system.check_database", job_id="ok-1")
    queue.enqueue("jobs.holds.expire_hold", BAD_HOLD_ID, job_id="bad-1")
    queue.enqueue("jobs.system.check_database", job_id="ok-2")
    seen: list[tuple[int, int]] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    result = admin.drain(redis, "default", lambda done, total: seen.append((done, total)))

    assert result == admin.DrainResult("default", total=3, done=3, failed=1, left=0)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert Job.fetch("ok-1", connection=redis).get_status() == JobStatus.FINISHED
    assert Job.fetch("bad-1", connection=redis).get_status() == JobStatus.FAILED
    # The async job ran in this process; a drain starts no ticker and leaves no worker behind.
    assert Job.fetch("ok-2", connection=redis).return_value()["database_time"]
    assert not any(key.startswith(b"rq:job:tick-") for key in redis.keys("rq:job:*"))
    assert admin.queue_status(redis).workers == []
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_drain_ends_even_when_the_queue_keeps_filling(redis: Redis) -> None:
    queue = Queue("outbox", connection=redis)
    for _ in range(3):
        queue.enqueue(refill, "outbox")
    result = admin.drain(redis, "outbox")
    assert (result.total, result.done, result.failed, result.left) == (3, 3, 0, 3)


def test_drain_of_an_empty_or_unknown_queue(redis: Redis) -> None:
    assert admin.drain(redis, "holds") == admin.DrainResult("holds", 0, 0, 0, 0)
    with pytest.raises(UnknownQueue):
        admin.drain(redis, "nowhere")


def test_drain_works_off_the_main_thread(redis: Redis) -> None:
    Queue("default", connection=redis).enqueue("jobs.system.check_database", job_id="threaded")
    results: list[admin.DrainResult] = []
    thread = threading.Thread(target=lambda: results.append(admin.drain(redis, "default")))
    thread.start()
    thread.join(timeout=60)
    assert results == [admin.DrainResult("default", 1, 1, 0, 0)]
    assert Job.fetch("threaded", connection=redis).get_status() == JobStatus.FINISHED


# Race tests: several operators act on one failed job at the same instant.

ROUNDS = 10
OPERATORS = 6


def _all_at_once(calls: list[Callable[[], Any]]) -> list[bool]:
    """Run ``calls`` in threads released together; which of them succeeded."""
    start = threading.Barrier(len(calls))
    outcomes: list[bool] = [False] * len(calls)

    def run(index: int) -> None:
        start.wait()
        try:
            calls[index]()
        except (JobNotFailed, JobNotFound):
            return
        outcomes[index] = True

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def _requeue_race(redis: Redis) -> None:
    for round_ in range(ROUNDS):
        job_id = f"race-{round_}"
        fail_job(redis, job_id)
        outcomes = _all_at_once([functools.partial(admin.requeue, redis, job_id)] * OPERATORS)
        assert sum(outcomes) == 1, outcomes
        assert Queue("holds", connection=redis).job_ids.count(job_id) == 1
        Queue("holds", connection=redis).empty()


def _delete_requeue_race(redis: Redis) -> None:
    for round_ in range(ROUNDS):
        job_id = f"race-{round_}"
        fail_job(redis, job_id)
        requeued, deleted = _all_at_once(
            [
                functools.partial(admin.requeue, redis, job_id),
                functools.partial(admin.delete_failed, redis, job_id),
            ]
        )
        # Exactly one operator is told they succeeded, and what they were told is true.
        assert requeued != deleted
        queued = job_id in Queue("holds", connection=redis).job_ids
        assert queued == requeued == Job.exists(job_id, connection=redis)
        Queue("holds", connection=redis).empty()


class _Unguarded(FailedJobRegistry):
    """RQ's failed registry with the guard taken out: it checks membership, then removes
    and acts whatever the removal said. The pause between check and act makes the race
    happen every time rather than now and then."""

    pause = threading.Barrier(1)

    def requeue(self, job_or_id: Job | str, at_front: bool = False) -> Job:
        job = job_or_id if isinstance(job_or_id, Job) else Job.fetch(job_or_id, connection=self.connection)
        if job.id not in self:
            raise InvalidJobOperation
        self.pause.wait()
        self.connection.zrem(self.key, job.id)
        return Queue(job.origin, connection=self.connection).enqueue_job(job)

    def remove(self, job: Job | str, pipeline: Any = None, delete_job: bool = False) -> int:
        job_id = job.id if isinstance(job, Job) else job
        if job_id not in self:
            return 0
        self.pause.wait()
        self.connection.zrem(self.key, job_id)
        return 1


def test_concurrent_requeues_enqueue_a_failed_job_once(redis: Redis) -> None:
    _requeue_race(redis)


def test_concurrent_requeue_and_delete_one_of_them_wins(redis: Redis) -> None:
    _delete_requeue_race(redis)


def test_negative_control_without_the_guard_the_race_tests_fail(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "FailedJobRegistry", _Unguarded)
    monkeypatch.setattr(_Unguarded, "pause", threading.Barrier(OPERATORS, timeout=10))
    with pytest.raises(AssertionError):
        _requeue_race(redis)
    Queue("holds", connection=redis).empty()
    monkeypatch.setattr(_Unguarded, "pause", threading.Barrier(2, timeout=10))
    with pytest.raises(AssertionError):
        _delete_requeue_race(redis)


SQLALCHEMY_TRACE = """Traceback (most recent call last):
  File "/app/jobs/holds.py", line 14, in expire_hold
    async with job_session() as session:
psycopg.OperationalError: connection failed: Connection refused

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/app/rq/job.py", line 1541, in _execute
    return asyncio.run(result)
           ^^^^^^^^^^^^^^^^^^^
sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: Connection refused
(Background on this error at: https://sqlalche.me/e/20/e3q8)
"""


@pytest.mark.parametrize(
    ("trace", "summary"),
    [
        (
            SQLALCHEMY_TRACE,
            "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: Connection refused",
        ),
        ("Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'a'\n", "KeyError: 'a'"),
        (
            "JobTimeoutException: Task exceeded maximum timeout value (60 seconds)",
            "JobTimeoutException: Task exceeded maximum timeout value (60 seconds)",
        ),
        ("", None),
    ],
)
def test_the_error_shown_is_the_exception_line_not_a_footnote(trace: str, summary: str | None) -> None:
    assert admin._last_line(trace) == summary
