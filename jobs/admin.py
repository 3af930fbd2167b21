"""What on-call sees and does with the job queues: depths, workers, failed jobs, requeue,
delete, and draining a queue in this process.

Everything here goes through RQ's own objects (queues, registries, ``Worker.all``) on a
synchronous Redis connection, and returns plain dataclasses so the staff API and the CLI
render the same facts. Only Boxoffice's queues (``jobs.queues.QUEUES``) are looked at or
acted on.

Concurrent operators are safe: requeueing or deleting a failed job first removes it from
its failed-job registry (one ``ZREM``), and only the caller whose removal succeeded goes on,
so of two simultaneous requeues exactly one enqueues the job, and a delete never removes a
job that a requeue has just put back on its queue.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.timeouts import TimerDeathPenalty

from booking.errors import BookingError, JobNotFailed, JobNotFound
from jobs.queues import QUEUES, queue_names

# RQ refuses any other job id; ours are uuid4 hex or our own ``<kind>-<uuid>[-<time>]``.
JOB_ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)
ARGS_SUMMARY_LENGTH = 120

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class QueueStatus:
    name: str
    queued: int
    started: int
    scheduled: int
    deferred: int
    failed: int
    # Seconds the job at the head of the queue (the next to run) has waited; None when empty.
    oldest_queued_age: float | None


@dataclass(frozen=True)
class WorkerView:
    name: str
    hostname: str | None
    pid: int | None
    state: str
    queues: list[str]
    current_job: str | None
    last_heartbeat: dt.datetime | None
    birth: dt.datetime | None


@dataclass(frozen=True)
class Status:
    queues: list[QueueStatus]
    workers: list[WorkerView]


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    function: str
    args: str
    enqueued_at: dt.datetime | None
    ended_at: dt.datetime | None
    # The exception that ended the job and its message, from the end of the traceback.
    error: str | None


@dataclass(frozen=True)
class RequeuedJob:
    id: str
    queue: str


@dataclass(frozen=True)
class DrainResult:
    queue: str
    total: int  # queued when the drain started
    done: int  # jobs run here, whatever their outcome
    failed: int  # of those, how many failed (kept in the failed registry, or put back to retry)
    left: int  # queued when the drain ended


def queue_status(redis: Redis) -> Status:
    """Depth of every queue and its registries, and every worker registered on this Redis."""
    now = dt.datetime.now(dt.UTC)
    queues = []
    for name in QUEUES:
        queue = Queue(name, connection=redis)
        queues.append(
            QueueStatus(
                name=name,
                queued=queue.count,
                # No cleanup of the started registry: that moves abandoned jobs to the failed
                # one, and reading the status must not change any job. The failed registry's
                # cleanup only drops entries past their TTL, whose jobs are already gone.
                started=queue.started_job_registry.get_job_count(cleanup=False),
                scheduled=queue.scheduled_job_registry.get_job_count(cleanup=False),
                deferred=queue.deferred_job_registry.get_job_count(cleanup=False),
                failed=queue.failed_job_registry.get_job_count(cleanup=True),
                oldest_queued_age=_head_age(queue, now),
            )
        )
    workers = [
        WorkerView(
            name=worker.name,
            hostname=worker.hostname,
            pid=worker.pid,
            state=str(worker.get_state()),
            queues=worker.queue_names(),
            current_job=worker.get_current_job_id(),
            last_heartbeat=worker.last_heartbeat,
            birth=worker.birth_date,
        )
        for worker in sorted(Worker.all(connection=redis), key=lambda w: w.name)
    ]
    return Status(queues=queues, workers=workers)


def _head_age(queue: Queue, now: dt.datetime) -> float | None:
    for job_id in queue.get_job_ids(0, 1):
        job = queue.fetch_job(job_id)
        if job is not None and job.enqueued_at is not None:
            return max(0.0, (now - _aware(job.enqueued_at)).total_seconds())
    return None


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def failed_jobs(redis: Redis, queue: str | None = None, limit: int = 50) -> list[FailedJob]:
    """The failed jobs of one queue or all of ours, most recently failed first, at most
    ``limit``. Entries whose job has already expired are left out.

    Raises:
        UnknownQueue: ``queue`` is not one of ours.
    """
    found: list[FailedJob] = []
    for name in queue_names(queue):
        registry = FailedJobRegistry(name, connection=redis)
        # Scored by expiry, so the newest failures come first (for one failure_ttl).
        ids = registry.get_job_ids(0, limit - 1, desc=True)
        found.extend(_describe(job) for job in Job.fetch_many(ids, connection=redis) if job is not None)
    found.sort(key=lambda job: job.ended_at or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
    return found[:limit]


def _describe(job: Job) -> FailedJob:
    try:
        function = job.func_name or "?"
        args = _summary(job.args, job.kwargs)
    except DeserializationError:
        function, args = "?", "(unreadable)"
    result = job.latest_result()
    error = _last_line(result.exc_string) if result is not None and result.exc_string else None
    return FailedJob(
        id=job.id,
        queue=job.origin,
        function=function,
        args=args,
        enqueued_at=_aware(job.enqueued_at) if job.enqueued_at else None,
        ended_at=_aware(job.ended_at) if job.ended_at else None,
        error=error,
    )


def _summary(args: Iterable[Any], kwargs: dict[str, Any]) -> str:
    parts = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= ARGS_SUMMARY_LENGTH else text[: ARGS_SUMMARY_LENGTH - 1] + "…"


def _last_line(traceback: str) -> str | None:
    """The line naming the exception that ended the job (``ValueError: ...``): the first
    unindented line after the traceback's last frame. Not simply the last line, which for
    some libraries is a footnote (SQLAlchemy ends with a link to its docs)."""
    lines = [line for line in traceback.splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    after = lines[frames[-1] + 1 :] if frames else []
    summary = next((line for line in after if not line.startswith(" ")), lines[-1] if lines else None)
    return summary.strip()[:500] if summary else None


def _fetch(redis: Redis, job_id: str) -> Job:
    """Raises: JobNotFound (no such job on our queues; an id RQ could not have issued)."""
    if not _JOB_ID.match(job_id):
        raise JobNotFound(f"No job {job_id[:130]!r}: job ids are letters, digits, '_' and '-'.")
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        raise JobNotFound(f"No job {job_id!r}; it may have expired.") from None
    if job.origin not in QUEUES:
        raise JobNotFound(f"No job {job_id!r} on the queues {', '.join(QUEUES)}.")
    return job


def _not_failed(job: Job, verb: str) -> BookingError:
    """Why a job that was found is not in its failed registry now."""
    try:
        status = job.get_status(refresh=True)
    except InvalidJobOperation:  # deleted since it was fetched (another operator)
        return JobNotFound(f"No job {job.id!r}; it was deleted a moment ago.")
    state = status.value if isinstance(status, JobStatus) else str(status)
    return JobNotFailed(
        f"Job {job.id!r} is {state}, not failed: only failed jobs can be {verb}.", state=state
    )


def requeue(redis: Redis, job_id: str) -> RequeuedJob:
    """Put a failed job back at the end of its queue, to be run again by a worker.

    Raises:
        JobNotFound: no such job (or another operator deleted it a moment ago).
        JobNotFailed: the job is not (or no longer) failed, e.g. another operator requeued
            it a moment ago.
    """
    job = _fetch(redis, job_id)
    try:
        # RQ removes the job from the registry first and enqueues it only if that removal
        # happened: the guard that lets exactly one of several concurrent requeues through.
        FailedJobRegistry(job.origin, connection=redis).requeue(job)
    except InvalidJobOperation:
        raise _not_failed(job, "requeued") from None
    return RequeuedJob(job.id, job.origin)


def requeue_all(redis: Redis, queue: str | None = None) -> int:
    """Requeue every failed job of one queue or all of ours; returns how many were requeued.
    Entries whose job has expired are dropped; jobs another operator requeued or deleted
    meanwhile are skipped, so concurrent calls never enqueue a job twice.

    Raises:
        UnknownQueue: ``queue`` is not one of ours.
    """
    requeued = 0
    for name in queue_names(queue):
        registry = FailedJobRegistry(name, connection=redis)
        for job_id in registry.get_job_ids():
            try:
                registry.requeue(job_id)
            except NoSuchJobError:
                registry.remove(job_id)  # its data expired: nothing left to run
                continue
            except InvalidJobOperation:
                continue  # requeued or deleted by someone else since we listed it
            requeued += 1
    return requeued


def delete_failed(redis: Redis, job_id: str) -> str:
    """Delete a failed job and its results for good; returns the queue it had failed on.

    Raises:
        JobNotFound: no such job (or another operator deleted it a moment ago).
        JobNotFailed: the job is queued, running, finished or scheduled (only failed jobs are
            deleted here: a queued job is work somebody still expects to happen).
    """
    job = _fetch(redis, job_id)
    # Taking it out of the failed registry is the claim: a concurrent requeue that won
    # instead leaves nothing to remove here, and its job is left alone.
    if not FailedJobRegistry(job.origin, connection=redis).remove(job):
        raise _not_failed(job, "deleted")
    job.delete()
    return str(job.origin)


class _DrainWorker(SimpleWorker):
    """A burst worker over one queue that runs each job in this process and reports after
    each. It is a plain RQ worker: no scheduler and no periodic ticker."""

    def __init__(self, *args: Any, progress: Progress | None = None, total: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress
        self.total = total
        self.done = 0
        self.failed = 0

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        # RQ would log the traceback here. The failure is kept with the job (failed_jobs
        # shows it); on the terminal it would only tear through the drain's progress display.
        return

    def execute_job(self, job: Job, queue: Queue) -> None:
        super().execute_job(job, queue)
        self.done += 1
        # The worker records the outcome on the job it ran; no need to read it back.
        if job.get_status(refresh=False) != JobStatus.FINISHED:
            self.failed += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


class _ThreadDrainWorker(_DrainWorker):
    """For a drain started off the main thread, where Python allows neither signal
    handlers nor SIGALRM: job timeouts use a timer instead, and stopping is the caller's."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        return


def drain(redis: Redis, queue: str, progress: Progress | None = None) -> DrainResult:
    """Run the jobs queued on ``queue`` now, in this process, one after another, calling
    ``progress(done, total)`` after each. Runs at most as many jobs as were queued when it
    started, so a queue that keeps filling (the ticker adds to it every second) still ends.

    Our jobs are idempotent and take ids, so running one here instead of in the daemon is
    safe. A failed job lands in the failed registry (or is retried) as in any worker. In the
    main thread, Ctrl-C stops after the job that is running, as RQ's workers do.

    Raises:
        UnknownQueue: ``queue`` is not one of ours.
    """
    (name,) = queue_names(queue)
    source = Queue(name, connection=redis)
    total = source.count
    if total == 0:
        return DrainResult(name, 0, 0, 0, 0)
    in_main = threading.current_thread() is threading.main_thread()
    worker_class = _DrainWorker if in_main else _ThreadDrainWorker
    worker = worker_class(
        [source],
        connection=redis,
        name=f"drain-{name}-{uuid.uuid4().hex[:8]}",
        progress=progress,
        total=total,
    )
    with _signals_restored(in_main):
        # Errors only: the progress callback, not a log line per job, tells how it goes.
        worker.work(burst=True, max_jobs=total, logging_level="ERROR")
    return DrainResult(name, total, worker.done, worker.failed, source.count)


@contextmanager
def _signals_restored(in_main: bool) -> Iterator[None]:
    """RQ's worker takes over SIGINT and SIGTERM; give them back once it is done, so the
    process that drained goes on answering Ctrl-C as before."""
    if not in_main:
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
