"""Database sessions for jobs.

An async connection belongs to the event loop that opened it. The worker daemon runs its
jobs on one long-lived loop (a ``JobLoop``), and jobs running there share a small pool that
belongs to that loop: the daemon's many short jobs (the relay and the admission tick every
second) then reuse a connection instead of opening one each. Anywhere else (a test or a CLI
command calling job code, RQ's own ``asyncio.run`` for a worker of another kind) there is no
such loop, and a job makes its own engine, without a pool, disposed when the job ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from rq.timeouts import BaseTimeoutException
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from booking.db import engine_scope, make_async_engine, make_sessionmaker
from booking.logs import get_logger
from booking.settings import get_settings

log = get_logger("boxoffice.jobs.db")

T = TypeVar("T")

# The daemon runs one job at a time, and a job holds one or two sessions at once; more than
# that is opened for the moment and closed on return.
POOL_SIZE = 2
MAX_OVERFLOW = 4
# How long the tasks of a job that failed (or left tasks behind) get to unwind once cancelled
# (their ``async with`` blocks return or invalidate the connections they held), and the
# engine to close its connections, before the loop is closed regardless.
SETTLE_SECONDS = 5.0


def database_url() -> str:
    url = get_settings().database_url
    if url is None:
        raise RuntimeError("jobs need BOXOFFICE_DATABASE_URL (boxoffice worker sets it from the local stack)")
    return url


def redis_url() -> str:
    url = get_settings().redis_url
    if url is None:
        raise RuntimeError("jobs need BOXOFFICE_REDIS_URL (boxoffice worker sets it from the local stack)")
    return url


class JobLoop:
    """One event loop for the async jobs of a worker, run one at a time, and the pooled
    engine that belongs to it (made at the first session a job asks for).

    Between two jobs the loop is idle and sound: no task of an earlier job is left (leftovers
    are cancelled when their job ends, as ``asyncio.run`` would), and no connection of the
    pool is checked out. When that cannot be made so, or when a job ended in a way that may
    have interrupted the loop's or a library's own code (a timeout raised by RQ's SIGALRM, an
    exception that did not come from the job's coroutine, a KeyboardInterrupt or SystemExit),
    the loop and its engine are thrown away (tasks cancelled, connections closed) and the next
    job gets new ones. A job that merely raised keeps them: its ``async with`` blocks returned
    its connections (a connection broken by the error is invalidated by SQLAlchemy).

    Not fork safe, and need not be: the daemon's worker runs jobs in its own process and its
    ticker is a spawned process, so no copy of the loop or of a pooled connection is ever
    inherited.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` to its end on the loop and return its result.

        Raises whatever the coroutine raised, or what interrupted the loop meanwhile (RQ's
        JobTimeoutException, SystemExit, KeyboardInterrupt)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.new_event_loop()
            _OWNERS[loop] = self
        task = loop.create_task(coroutine)
        try:
            result = loop.run_until_complete(task)
        except BaseException as error:
            self._after_job(loop, sound=task.done() and _ordinary(error))
            raise
        self._after_job(loop, sound=True)
        return result

    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """The session factory of the loop's engine, made on first use; to be called on the
        loop, by a job it runs."""
        if self._sessions is None:
            # A connection the server closed (a restart, an idle timeout) is found by the ping
            # at checkout and replaced there, not by the next job's first statement failing:
            # one round trip per checkout, far less than the connection per job it saves.
            self._engine = make_async_engine(
                database_url(), pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_pre_ping=True
            )
            self._sessions = make_sessionmaker(self._engine)
        return self._sessions

    def close(self) -> None:
        """Cancel what is left on the loop, close the engine's connections and the loop.
        Safe to call more than once; the next ``run`` would start a new loop."""
        self._discard()

    def _after_job(self, loop: asyncio.AbstractEventLoop, *, sound: bool) -> None:
        if not sound:
            self._discard()
            return
        try:
            self._tidy(loop)
        except BaseException:
            # Interrupted while tidying (the job's timeout fired just then): nothing of the
            # loop is kept, and the interruption is the job's outcome, as RQ would see it.
            self._discard()
            raise

    def _tidy(self, loop: asyncio.AbstractEventLoop) -> None:
        leftovers = asyncio.all_tasks(loop)
        if leftovers:
            log.info("job left tasks running; cancelling them", tasks=len(leftovers))
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.wait(leftovers, timeout=SETTLE_SECONDS))
            _consume(leftovers)
            if not all(task.done() for task in leftovers):
                log.warning("tasks left by a job did not end when cancelled; starting a new event loop")
                self._discard()
                return
        if self._engine is not None:
            pool = self._engine.pool
            if isinstance(pool, QueuePool) and pool.checkedout():
                log.warning("a job kept database connections checked out; starting a new pool")
                self._discard()

    def _discard(self) -> None:
        loop, engine = self._loop, self._engine
        # Forgotten first: whatever happens below, the next job starts afresh.
        self._loop = self._engine = self._sessions = None
        if loop is None:
            return
        _OWNERS.pop(loop, None)
        if loop.is_closed():
            return
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(_settle(tasks, engine))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            log.warning("closing a job event loop did not go cleanly", exc_info=True)
        finally:
            # Without waiting for the default executor: a thread still blocked in a job that
            # timed out must not hold up the worker.
            loop.close()


# The loop each JobLoop runs, to find the JobLoop from inside a job. A job on any other loop
# (its own asyncio.run, a test's loop) is not in here.
_OWNERS: dict[asyncio.AbstractEventLoop, JobLoop] = {}


def _ordinary(error: BaseException) -> bool:
    """Whether the job's coroutine raised ``error`` by itself, as opposed to a timeout that
    RQ's signal handler raised wherever the code happened to be, or a process exit."""
    return isinstance(error, Exception) and not isinstance(error, BaseTimeoutException)


async def _settle(tasks: set[asyncio.Task[Any]], engine: AsyncEngine | None) -> None:
    if tasks:
        await asyncio.wait(tasks, timeout=SETTLE_SECONDS)
        _consume(tasks)
    if engine is not None:
        await asyncio.wait_for(engine.dispose(), SETTLE_SECONDS)


def _consume(tasks: Iterable[asyncio.Task[Any]]) -> None:
    # Their outcome was the job's to report (or is moot once cancelled): retrieved here so
    # asyncio does not log each as "exception was never retrieved".
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()


@asynccontextmanager
async def job_sessions() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory for jobs that run several transactions (with provider calls
    between them): the worker loop's pooled one, else one on an engine of this job's own,
    disposed when the job ends."""
    owner = _OWNERS.get(asyncio.get_running_loop())
    if owner is not None:
        yield owner.sessions()
        return
    async with engine_scope(database_url(), poolclass=NullPool) as engine:
        yield make_sessionmaker(engine)


@asynccontextmanager
async def job_session() -> AsyncIterator[AsyncSession]:
    async with job_sessions() as sessions, sessions() as session:
        yield session
