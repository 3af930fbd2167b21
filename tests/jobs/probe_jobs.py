"""Jobs that tell which PostgreSQL connection they ran on, or fail in chosen ways; enqueued
by name (``tests.jobs.probe_jobs.backend_pid``) for a worker to run."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from jobs.db import job_session, job_sessions

# What the background task of ``raise_leaving_a_task`` went through; read by the tests,
# whose worker runs in their own process.
LEFT_BEHIND: list[str] = []


async def backend_pid() -> dict[str, object]:
    """The server process of this job's connection, and whether the transaction-local
    setting of a failed job is still visible (it is if that job's transaction was never
    rolled back)."""
    async with job_session() as session:
        row = (
            await session.execute(text("SELECT pg_backend_pid(), current_setting('boxoffice.probe', true)"))
        ).one()
    return {"pid": int(row[0]), "leftover": row[1] or None}


async def raise_in_transaction() -> None:
    async with job_session() as session:
        await session.execute(text("SELECT set_config('boxoffice.probe', 'dirty', true)"))
        raise ValueError("the job failed in its transaction")


async def raise_leaving_a_task() -> None:
    """Fails while a task of its own holds a connection and waits forever."""
    started = asyncio.Event()

    async def hold() -> None:
        try:
            async with job_sessions() as sessions, sessions() as session:
                await session.execute(text("SELECT set_config('boxoffice.probe', 'dirty', true)"))
                started.set()
                await asyncio.sleep(3600)
        finally:
            LEFT_BEHIND.append("ended")

    asyncio.get_running_loop().create_task(hold())
    await started.wait()
    raise ValueError("the job failed with a task still running")


async def wait_on_the_database() -> None:
    """Outlives any short job timeout waiting for PostgreSQL (the timeout fires while the
    loop waits for the socket)."""
    async with job_session() as session:
        await session.execute(text("SELECT pg_sleep(30)"))


async def compute_in_transaction() -> None:
    """Outlives any short job timeout in its own code, inside a transaction (the timeout
    fires in the coroutine, not in the loop)."""
    async with job_session() as session:
        await session.execute(text("SELECT set_config('boxoffice.probe', 'dirty', true)"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)  # noqa: ASYNC251 - blocking on purpose: the loop never runs
