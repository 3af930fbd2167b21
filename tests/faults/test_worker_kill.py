"""Promise 3 with the daemon dying: a worker killed with SIGKILL mid-job loses nothing.

The sweeper is caught mid-transaction (the test holds the row lock of one expired hold's
unit, so the sweeper waits inside its transaction), the worker's whole process group is
SIGKILLed, and a fresh worker must leave every expired hold tidied within a sweeper interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import psycopg
import pytest
from redis import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from daemon.periodic import SWEEP_INTERVAL
from tests.conftest import _conninfo
from tests.factories import make_event, make_fan
from tests.faults.conftest import kill_worker, start_worker, wait_for_lock_waiter

pytestmark = pytest.mark.slow
SLACK = 10  # worker start-up and job pick-up, on top of the sweeper interval


async def _wait_all_tidied(session: AsyncSession, deadline: float) -> tuple[int, int]:
    while True:
        await session.rollback()
        row = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM holds WHERE state = 'active'),"
                    " (SELECT count(*) FROM inventory_units WHERE state = 'held')"
                )
            )
        ).one()
        if row == (0, 0) or time.monotonic() > deadline:
            return int(row[0]), int(row[1])
        await asyncio.sleep(0.25)


async def _short_holds(session: AsyncSession, count: int) -> list[holds.HoldView]:
    event = await make_event(session, seats=count, ga_capacity=1)
    policy = HoldPolicy(ttl=dt.timedelta(seconds=3))
    views = []
    for seat in event.seat_ids:
        owner = Owner(fan_id=await make_fan(session))
        views.append(
            await holds.create_hold(
                session, owner=owner, event_id=event.event_id, selection=SeatSelection((seat,)), policy=policy
            )
        )
        await session.commit()
    return views


async def test_sigkill_mid_expiry_job_then_restart_tidies_everything(
    session: AsyncSession, database_url: str, redis_url: str
) -> None:
    views = await _short_holds(session, 20)
    victim = views[0].id
    blocker = psycopg.connect(_conninfo(database_url))
    # Activity statistics are a snapshot per transaction: watch from outside the blocker's.
    watcher = psycopg.connect(_conninfo(database_url), autocommit=True)
    worker = start_worker(database_url, redis_url)
    try:
        blocker.execute("SELECT 1 FROM inventory_units WHERE hold_id = %s FOR UPDATE", (victim,))
        # Wait until the worker's sweeper is inside the victim's tidy-up, waiting on our lock.
        await wait_for_lock_waiter(watcher, 60)
        kill_worker(worker)
    finally:
        blocker.rollback()
        blocker.close()
        watcher.close()
    assert (await holds.get_hold(session, victim)).state == "active"  # the killed sweep did nothing

    worker = start_worker(database_url, redis_url)
    try:
        left = await _wait_all_tidied(session, time.monotonic() + SWEEP_INTERVAL + SLACK)
    finally:
        kill_worker(worker)
    assert left == (0, 0)


async def test_with_redis_wiped_the_sweeper_alone_tidies_everything(
    session: AsyncSession, database_url: str, redis_url: str
) -> None:
    await _short_holds(session, 10)
    worker = start_worker(database_url, redis_url)
    try:
        await asyncio.sleep(2)  # the worker has relayed and ticked by now
    finally:
        kill_worker(worker)
    Redis.from_url(redis_url).flushdb()  # every queued and scheduled job is gone
    await asyncio.sleep(1.5)  # past the 3 s deadline
    worker = start_worker(database_url, redis_url)
    try:
        left = await _wait_all_tidied(session, time.monotonic() + SWEEP_INTERVAL + SLACK)
    finally:
        kill_worker(worker)
    assert left == (0, 0)
