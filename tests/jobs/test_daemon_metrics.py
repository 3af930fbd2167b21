"""The worker daemon's own metrics port, for a daemon on a host without the API."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking import metrics
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.settings import Settings
from daemon.metrics import serve_metrics
from tests.conftest import free_port
from tests.factories import advance_clock, make_event, make_fan
from tests.scrape import parse


def _start_daemon(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    env = {key: value for key, value in os.environ.items() if key != metrics.MULTIPROC_ENV}
    env.update(
        BOXOFFICE_DATABASE_URL=settings.database_url,
        BOXOFFICE_REDIS_URL=settings.redis_url,
        BOXOFFICE_DAEMON_METRICS_PORT=str(port),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "console", "worker"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def daemon_port(settings: Settings) -> Iterator[int]:
    port = free_port()
    daemon = _start_daemon(settings, port)
    try:
        yield port
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)


@pytest.mark.slow
async def test_a_daemon_serves_the_expiries_of_its_sweeper_on_its_own_port(
    session: AsyncSession, settings: Settings, daemon_port: int
) -> None:
    event = await make_event(session, seats=4, ga_capacity=1)
    owner = Owner(fan_id=await make_fan(session))
    for seat in event.seat_ids[:3]:
        await holds.create_hold(
            session,
            owner=owner,
            event_id=event.event_id,
            selection=SeatSelection((seat,)),
            policy=HoldPolicy(),
        )
        await session.commit()
    await advance_clock(session, 900)

    # The sweeper runs every 15 s: within a slot or two of the clock moving.
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon_port}", timeout=5) as client:
        while True:
            try:
                answer = await client.get("/metrics")
                seen = parse(answer.text)
                if seen.value("boxoffice_holds_expired_total") >= 3:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "the daemon's port never showed the expiries"
            await asyncio.sleep(0.5)
    assert answer.headers["content-type"].startswith("text/plain; version=")
    assert seen.value("boxoffice_holds_expired_total") == 3
    # Its own process's registry: no folder shared, so no per-process label, and Python's
    # process metrics of the daemon itself.
    assert "pid" not in {label for s in seen.samples for label in s.labels}
    assert seen.has("process_cpu_seconds_total")


def test_a_taken_port_leaves_the_daemon_without_one_not_stopped() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_metrics("127.0.0.1", port) is False
