"""The worker killed mid-sale, and frozen (SIGSTOP) inside the sweeper's transaction, past the deadlines of the
holds it is tidying, while fans buy the seats those holds had; then thawed (SIGCONT).

The stale sweep must not apply to what changed meanwhile: seats other fans hold or bought
stay theirs, and the frozen transaction's locks only make the seats it touched busy (503)
until it ends. The sale never waits for the worker: expired holds' seats are claimable
whether or not they were swept.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.settings import Settings
from daemon.periodic import SWEEP_INTERVAL
from tests.conftest import _conninfo
from tests.factories import make_event, make_signed_in_fan
from tests.faults.audit import audit
from tests.faults.buyers import Burst, Fan
from tests.faults.conftest import kill_worker, start_worker, wait_for_lock_waiter
from tests.faults.test_redis_outage import _wait_relayed
from tests.faults.test_worker_kill import _short_holds
from tests.live_api import LiveApi

pytestmark = pytest.mark.slow
HOLDS = 12
FROZEN_SECONDS = 8


async def test_a_sweep_frozen_past_the_deadlines_does_not_undo_what_fans_did_meanwhile(
    settings: Settings, session: AsyncSession, worker_factory: list[subprocess.Popen[bytes]]
) -> None:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    database_url = settings.database_url
    views = await _short_holds(session, HOLDS)
    event_id = views[0].event_id
    victim = views[0]
    fans = [
        Fan(token, seat_ids=[int(view.items[0].seat_id or 0)])
        for view, (_, token) in zip(views, [await make_signed_in_fan(session) for _ in views], strict=True)
    ]
    blocker = psycopg.connect(_conninfo(database_url))
    watcher = psycopg.connect(_conninfo(database_url), autocommit=True)
    worker = start_worker(database_url, settings.redis_url)
    worker_factory.append(worker)
    live = LiveApi(settings)
    live.start()
    try:
        blocker.execute("SELECT 1 FROM inventory_units WHERE hold_id = %s FOR UPDATE", (victim.id,))
        await wait_for_lock_waiter(watcher, SWEEP_INTERVAL + 30)
        os.killpg(worker.pid, signal.SIGSTOP)
        # Our lock goes; the frozen sweeper's statement completes in PostgreSQL, but its
        # transaction stays open, holding the victim's units, until the worker runs again.
        blocker.rollback()
        burst = Burst(live.url, event_id, victim.items[0].price_tier_id, request_timeout=10)
        buying = asyncio.ensure_future(burst.run(fans, seconds=FROZEN_SECONDS + 20))
        await asyncio.sleep(FROZEN_SECONDS)
        bought_while_frozen = sum(fan.order_id is not None for fan in fans)
        os.killpg(worker.pid, signal.SIGCONT)
        await buying
        await burst.settle(fans)
        # The thawed worker finishes its sweep and the next ones: every old hold ends expired.
        deadline = time.monotonic() + SWEEP_INTERVAL + 15
        while True:
            await session.rollback()
            live_old = await session.scalar(
                text("SELECT count(*) FROM holds WHERE id = ANY(:ids) AND state <> 'expired'"),
                {"ids": [v.id for v in views]},
            )
            if live_old == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        live.stop()
        blocker.close()
        watcher.close()
    assert worker.poll() is None
    assert live_old == 0
    # The fans did not wait for the worker: all but the locked seat sold while it was frozen.
    assert bought_while_frozen >= HOLDS - 1, burst.answers
    assert all(fan.order_id is not None for fan in fans), burst.answers
    assert not [key for key in burst.answers if " 500" in key or "Error" in key], burst.answers
    assert audit(database_url, event_id, told_confirmed=burst.told_confirmed(fans)) == []


async def test_a_worker_killed_mid_sale_loses_nothing_and_its_successor_catches_up(
    settings: Settings, session: AsyncSession, worker_factory: list[subprocess.Popen[bytes]]
) -> None:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    event = await make_event(session, seats=2, ga_capacity=50)
    fans = [Fan(token) for _, token in [await make_signed_in_fan(session) for _ in range(40)]]
    worker = start_worker(settings.database_url, settings.redis_url)
    worker_factory.append(worker)
    live = LiveApi(settings)
    live.start()
    try:
        burst = Burst(live.url, event.event_id, event.ga_tier_id)
        buying = asyncio.ensure_future(burst.run(fans, seconds=30, spread=6))
        await asyncio.sleep(2)
        kill_worker(worker)
        await asyncio.sleep(2)
        successor = start_worker(settings.database_url, settings.redis_url)
        worker_factory.append(successor)
        await buying
        await burst.settle(fans)
        pending = await _wait_relayed(settings.database_url, 30)
    finally:
        live.stop()
    assert pending == 0
    assert successor.poll() is None
    assert set(burst.answers) <= {
        "hold 201",
        "checkout 200",
        "hold 503 overloaded",
        "checkout 503 overloaded",
    }
    assert audit(settings.database_url, event.event_id, told_confirmed=burst.told_confirmed(fans)) == []
