"""Diagnostic jobs: prove a worker can run jobs and reach the database."""

from __future__ import annotations

import os

from sqlalchemy import text

from booking.db import engine_scope
from booking.settings import get_settings


async def check_database() -> dict[str, str | int]:
    """Ask PostgreSQL for its clock from inside a worker. The engine lives and dies within
    this job's event loop: RQ runs each async job on a fresh loop."""
    settings = get_settings()
    if settings.database_url is None:
        raise RuntimeError("the worker has no BOXOFFICE_DATABASE_URL")
    async with (
        engine_scope(settings.database_url, pool_size=1, max_overflow=0) as engine,
        engine.connect() as connection,
    ):
        now = await connection.scalar(text("SELECT now()"))
    return {"database_time": str(now), "worker_pid": os.getpid()}
