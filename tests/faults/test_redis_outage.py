"""Valkey stalls or dies mid-sale, and comes back: the product answers throughout and
recovers by itself.

While Redis is away, reads (event detail, listing, availability, the seat map) answer from
PostgreSQL; holds and checkout, decided in PostgreSQL, go on or are refused with a clean
503, never hang past the client's timeout; the worker daemon waits instead of exiting and
relays the outbox again once Redis is back. Then the audit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.settings import Settings
from console.stack import EmbeddedValkey
from tests.conftest import _conninfo
from tests.factories import SmallEvent, make_event, make_signed_in_fan
from tests.faults.audit import audit
from tests.faults.buyers import Burst, Fan
from tests.faults.conftest import start_worker
from tests.live_api import LiveApi

pytestmark = pytest.mark.slow
FANS = 40
READ_TIMEOUT = 5.0  # a fan's client gives up after this; no answer may take longer


class Readers:
    """Fans looking at the event while it sells: every answer's status, and the slowest."""

    def __init__(self, base_url: str, event: SmallEvent) -> None:
        self.base_url = base_url
        self.paths = [
            f"/events/{event.event_id}",
            f"/events/{event.event_id}/seatmap",
            f"/events/{event.event_id}/availability",
            "/events",
        ]
        self.statuses: Counter[str] = Counter()
        self.degraded = 0
        self.slowest = 0.0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=READ_TIMEOUT) as client:
            while not self.stop.is_set():
                for path in self.paths:
                    started = time.monotonic()
                    try:
                        answer = await client.get(path)
                        outcome = str(answer.status_code)
                        self.degraded += "boxoffice-degraded" in answer.headers
                    except httpx.TransportError as error:
                        outcome = type(error).__name__
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.statuses[f"{path.split('/')[-1]} {outcome}"] += 1
                await asyncio.sleep(0.1)


def _outbox_pending(database_url: str) -> int:
    with psycopg.connect(_conninfo(database_url), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE relayed_at IS NULL").fetchone()
        return int(row[0]) if row else 0


async def _wait_relayed(database_url: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while True:
        pending = _outbox_pending(database_url)
        if not pending or time.monotonic() >= deadline:
            return pending
        await asyncio.sleep(0.5)


async def _sale_through_outage(
    settings: Settings,
    session: AsyncSession,
    valkey: EmbeddedValkey,
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    outage: float,
    break_it: str,
) -> None:
    event = await make_event(session, seats=4, ga_capacity=FANS + 10)
    fans = [Fan(token) for _, token in [await make_signed_in_fan(session) for _ in range(FANS)]]
    assert settings.database_url is not None
    assert settings.redis_url is not None
    worker = start_worker(settings.database_url, settings.redis_url, log=tmp_path / "worker.log")
    workers.append(worker)
    live = LiveApi(settings)
    live.start()
    try:
        readers = Readers(live.url, event)
        reading = asyncio.ensure_future(readers.run())
        burst = Burst(live.url, event.event_id, event.ga_tier_id, request_timeout=READ_TIMEOUT)
        buying = asyncio.ensure_future(burst.run(fans, seconds=outage + 20, spread=outage + 3))
        await asyncio.sleep(1.5)
        pid = valkey.pid
        assert pid is not None
        if break_it == "stop":
            os.kill(pid, signal.SIGSTOP)
        else:
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(outage)
        if break_it == "stop":
            os.kill(pid, signal.SIGCONT)
        else:
            valkey.restart()
        await buying
        await burst.settle(fans)
        readers.stop.set()
        await reading
        # Recovery, unaided: the same worker process relays everything written meanwhile.
        pending = await _wait_relayed(settings.database_url, 30)
    finally:
        live.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert worker.poll() is None, f"the worker exited:\n{log[-3000:]}"
    assert pending == 0, f"{pending} outbox messages never relayed:\n{log[-3000:]}"
    # Reads answered throughout, from PostgreSQL while Redis was away, within the timeout.
    assert all(key.endswith(" 200") for key in readers.statuses), readers.statuses
    assert readers.degraded > 0
    assert readers.slowest < READ_TIMEOUT
    # Writes succeeded or were refused cleanly; none hung, none answered 500.
    allowed = {
        "hold 201",
        "checkout 200",
        "hold 503 overloaded",
        "checkout 503 overloaded",
        "hold 409 sold-out",
    }
    assert set(burst.answers) <= allowed, burst.answers
    assert burst.slowest < READ_TIMEOUT
    assert sum(n for key, n in burst.answers.items() if key == "checkout 200") > 0
    assert audit(settings.database_url, event.event_id, told_confirmed=burst.told_confirmed(fans)) == []


@pytest.mark.parametrize(
    ("break_it", "outage"),
    [pytest.param("stop", 10, id="stopped-10s"), pytest.param("kill", 60, id="killed-60s")],
)
async def test_valkey_away_mid_sale(
    settings: Settings,
    session: AsyncSession,
    own_valkey: EmbeddedValkey,
    worker_factory: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    break_it: str,
    outage: float,
) -> None:
    with_valkey = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{own_valkey.port}/0"})
    await _sale_through_outage(with_valkey, session, own_valkey, worker_factory, tmp_path, outage, break_it)
