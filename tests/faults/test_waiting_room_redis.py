"""The waiting room when Valkey dies, and when it comes back empty.

While it is away: holds and checkouts on the event whose room is active fail closed (503 with
Retry-After), an event without a room keeps selling, and joining or polling answers 503.
After a restart that lost every key: the fan admitted before is still admitted (the same
admission and token, from PostgreSQL) and is never admitted a second time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.app import create_app
from booking.db import make_sessionmaker
from booking.payments import offline
from booking.redis_client import async_client
from booking.settings import Settings
from booking.waiting_room import service as rooms
from console.stack import EmbeddedValkey
from tests.factories import SmallEvent, make_event, make_signed_in_fan

pytestmark = pytest.mark.slow


@pytest.fixture
async def api(settings: Settings, own_valkey: EmbeddedValkey) -> AsyncIterator[AsyncTestClient[Litestar]]:
    on_own = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{own_valkey.port}/0"})
    async with AsyncTestClient(app=create_app(on_own)) as client:
        yield client


async def _tick(engine: AsyncEngine, valkey: EmbeddedValkey, event_id: uuid.UUID) -> list[uuid.UUID]:
    redis = async_client(f"redis://127.0.0.1:{valkey.port}/0")
    try:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        return list((await rooms.tick(make_sessionmaker(engine), redis, event_id, now=later)).admitted)
    finally:
        await redis.aclose()


def _problem(answer: Any) -> str:
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    return str(answer.json()["type"]).rsplit("/", 1)[1]


async def _hold(api: AsyncTestClient[Litestar], headers: dict[str, str], event: SmallEvent, seat: int) -> Any:
    return await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": [seat]},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )


async def test_valkey_away_then_back_empty(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    engine: AsyncEngine,
    own_valkey: EmbeddedValkey,
) -> None:
    roomed, plain = (
        await make_event(session, seats=6, ga_capacity=2),
        await make_event(session, seats=4, ga_capacity=2),
    )
    now = dt.datetime.now(dt.UTC)
    await rooms.set_room(
        session,
        roomed.event_id,
        enabled=True,
        sale_opens_at=now - dt.timedelta(minutes=1),
        rate_per_minute=600,
        now=now - dt.timedelta(minutes=2),
    )
    await session.commit()
    fan_id, bearer = await make_signed_in_fan(session)
    fan = {"Authorization": f"Bearer {bearer}"}
    queue = f"/events/{roomed.event_id}/queue"
    assert (await api.post(queue, headers=fan)).status_code == 200
    assert await _tick(engine, own_valkey, roomed.event_id) == [fan_id]
    token = (await api.get(f"{queue}/me", headers=fan)).json()["admission"]["token"]
    admitted = {**fan, "Admission-Token": token}
    held = await _hold(api, admitted, roomed, roomed.seat_ids[0])
    assert held.status_code == 201, held.text
    other_id, other_bearer = await make_signed_in_fan(session)
    waiting = {"Authorization": f"Bearer {other_bearer}"}
    assert (await api.post(queue, headers=waiting)).json()["state"] == "queued"

    pid = own_valkey.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if not own_valkey.running():
            break
        await asyncio.sleep(0.05)

    # Fail closed where the room is active, with a time to come back.
    refused = await _hold(api, admitted, roomed, roomed.seat_ids[1])
    assert (refused.status_code, _problem(refused)) == (503, "waiting-room-unavailable")
    assert int(refused.headers["retry-after"]) >= 1
    checkout = await api.post(
        f"/holds/{held.json()['id']}/checkout",
        json={"provider": "offline", "card_number": offline.SUCCESS},
        headers=admitted,
    )
    assert (checkout.status_code, _problem(checkout)) == (503, "waiting-room-unavailable")
    assert "retry-after" in checkout.headers
    for answer in (await api.post(queue, headers=waiting), await api.get(f"{queue}/me", headers=waiting)):
        assert (answer.status_code, _problem(answer)) == (503, "waiting-room-unavailable")
        assert "retry-after" in answer.headers
    # An event without a room keeps selling.
    sold = await _hold(api, fan, plain, plain.seat_ids[0])
    assert sold.status_code == 201, sold.text

    # Back, with nothing in it.
    for dump in own_valkey.data_dir.glob("*.rdb"):
        dump.unlink()
    own_valkey.restart()
    deadline = time.monotonic() + 20
    while True:  # the process's breaker tries Redis again after its cool-down
        me = await api.get(f"{queue}/me", headers=fan)
        if me.status_code == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert me.status_code == 200, me.text
    assert (me.json()["state"], me.json()["admission"]["token"]) == ("admitted", token)
    assert (await api.post(queue, headers=fan)).json()["admission"]["token"] == token
    # The waiting fan's place was lost with the rest: they join again. The tick counts the
    # shopper again from PostgreSQL, and admits nobody twice.
    lost = await api.get(f"{queue}/me", headers=waiting)
    assert (lost.status_code, _problem(lost)) == (404, "queue-place-not-found")
    assert (await api.post(queue, headers=waiting)).json()["position"] == 1
    assert await _tick(engine, own_valkey, roomed.event_id) == [other_id]
    assert (
        await session.scalar(
            text("SELECT count(*) FROM waiting_room_admissions WHERE event_id = :e"), {"e": roomed.event_id}
        )
        == 2
    )
    again = await _hold(api, admitted, roomed, roomed.seat_ids[1])
    assert again.status_code == 201, again.text
