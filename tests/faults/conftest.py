"""Parts of a stack a fault test can break: a Valkey of its own (to stop or kill), a
PostgreSQL of its own (to restart), a worker daemon in its own process group (to kill)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from booking import migrations
from console.stack import EmbeddedPostgres, EmbeddedValkey


def start_worker(database_url: str, redis_url: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BOXOFFICE_DATABASE_URL=database_url, BOXOFFICE_REDIS_URL=redis_url)
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "console", "worker"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's whole process group (it and its ticker)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


async def wait_for_lock_waiter(watcher: psycopg.Connection[tuple[object, ...]], seconds: float) -> None:
    """Until some session of ``watcher``'s database waits on a lock (the worker's sweeper on
    a row the test locked). ``watcher`` must be in autocommit: activity statistics are a
    snapshot per transaction."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        if row and row[0] > 0:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the sweeper never reached the locked hold")


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers a test starts (append them); all killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for worker in started:
        kill_worker(worker)


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path / "valkey-data")
    server.start()
    try:
        yield server
    finally:
        pid = server.pid
        if pid is not None:
            # A test may leave it stopped: it must run to shut down.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A migrated PostgreSQL of this test's own, and its URL. Not under pytest's temporary
    folder, for the reason given in tests/conftest.py."""
    folder = Path(tempfile.mkdtemp(prefix="boxoffice-fault-pg-"))
    server = EmbeddedPostgres(folder)
    url = server.start()
    migrations.upgrade(url)
    try:
        yield server, url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
