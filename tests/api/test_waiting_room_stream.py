"""``GET /events/{event}/queue/me/stream``: a fan's place over Server-Sent Events, on a real
server (uvicorn on loopback: the in-process client does not stream). The admission tick is
run by the test, as the worker daemon would run it."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.routes import waiting_room as routes
from booking.db import make_sessionmaker
from booking.settings import Settings
from booking.waiting_room import service as rooms
from tests.factories import SmallEvent, make_event, make_signed_in_fan
from tests.live_api import LiveApi
from tests.sse import SseReader


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stream checks the place and sends keep-alives faster than in production.
    monkeypatch.setattr(routes, "STREAM_POLL_SECONDS", 0.2)
    monkeypatch.setattr(routes, "KEEPALIVE_SECONDS", 0.5)


@pytest.fixture
def server(settings: Settings, quick: None) -> Iterator[LiveApi]:
    api = LiveApi(settings)
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
async def http(server: LiveApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    event = await make_event(session, seats=4, ga_capacity=4)
    now = dt.datetime.now(dt.UTC)
    await rooms.set_room(
        session,
        event.event_id,
        enabled=True,
        sale_opens_at=now - dt.timedelta(minutes=1),
        rate_per_minute=600,
        now=now - dt.timedelta(minutes=2),
    )
    await session.commit()
    return event


async def test_the_stream_sends_the_place_then_the_token_and_ends(
    http: httpx.AsyncClient, session: AsyncSession, engine: AsyncEngine, redis_url: str, event: SmallEvent
) -> None:
    fan_id, token = await make_signed_in_fan(session)
    headers = {"Authorization": f"Bearer {token}"}
    joined = await http.post(f"/events/{event.event_id}/queue", headers=headers)
    assert joined.status_code == 200, joined.text
    async with http.stream("GET", f"/events/{event.event_id}/queue/me/stream", headers=headers) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(answer)
        first = await reader.block()
        assert first.retry == routes.RETRY_MS
        queued = await reader.event()
        assert queued.event == "queued"
        assert (queued.json()["position"], queued.json()["admission"]) == (1, None)
        # Nothing changes: keep-alives only, no second copy of the same place.
        assert (await reader.block()).comment == "keep-alive"

        redis = Redis.from_url(redis_url)
        try:
            result = await rooms.tick(
                make_sessionmaker(engine),
                redis,
                event.event_id,
                now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2),
            )
        finally:
            await redis.aclose()
        assert result.admitted == (fan_id,)
        admitted = await reader.event()
        assert admitted.event == "admitted"
        body = admitted.json()
        assert body["state"] == "admitted"
        assert body["admission"]["token"]
        with pytest.raises(StopAsyncIteration):
            await reader.block()
    # The token the stream sent is the one polling gives.
    me = await http.get(f"/events/{event.event_id}/queue/me", headers=headers)
    assert me.json()["admission"]["token"] == body["admission"]["token"]


async def test_the_stream_ends_when_the_room_closes(
    http: httpx.AsyncClient, session: AsyncSession, event: SmallEvent
) -> None:
    _, token = await make_signed_in_fan(session)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await http.post(f"/events/{event.event_id}/queue", headers=headers)).status_code == 200
    async with http.stream("GET", f"/events/{event.event_id}/queue/me/stream", headers=headers) as answer:
        reader = SseReader(answer)
        assert (await reader.event()).event == "queued"
        await rooms.set_room(session, event.event_id, enabled=False)
        await session.commit()
        # Within the process's second of trusting its copy of the rooms.
        closed = await reader.event(within=5)
        assert closed.event == "closed"
        assert closed.json()["code"] == "waiting-room-not-active"
        with pytest.raises(StopAsyncIteration):
            await reader.block()
