"""Diagnostic jobs: prove a worker can run jobs and reach the database."""

from __future__ import annotations

import os

from sqlalchemy import text

from booking.db import engine_scope
from booking.settings import get_settings


async def check_database() -> dict[str, str | int]:
    """Ask PostgreSQL for its clock from inside a worker, on an engine of its own that lives
    and dies with the call: a diagnostic, so it does not depend on the job loop's pool."""
    settings = get_settings()
    if settings.database_url is None:
        raise RuntimeError("the worker has no BOXOFFICE_DATABASE_URL")
    async with (
        engine_scope(settings.database_url, pool_size=1, max_overflow=0) as engine,
        engine.connect() as connection,
    ):
        now = await connection.scalar(text("SELECT now()"))
    return {"database_time": str(now), "worker_pid": os.getpid()}
