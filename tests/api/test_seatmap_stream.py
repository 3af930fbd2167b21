"""``GET /events/{event}/seatmap/stream``: live seat-map changes over Server-Sent Events, on a
real server (uvicorn on loopback: the in-process client does not stream), with the outbox
relay run inline, as the worker would run it, since the relay is what publishes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api import seatmap_stream
from booking.inventory import live
from booking.settings import Settings, get_settings
from jobs.outbox import relay_outbox, seatmap_version_key
from tests.factories import SmallEvent, make_event, make_signed_in_fan
from tests.live_api import LiveApi
from tests.sse import Sse, SseReader

PROBLEM = "application/problem+json"


@pytest.fixture
def relay_env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The outbox relay reads its servers from settings, as in a worker."""
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def quick_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    # A keep-alive comment is how a test sees that nothing else was waiting to be sent.
    monkeypatch.setattr(seatmap_stream, "KEEPALIVE_SECONDS", 0.3)


@pytest.fixture
def server(settings: Settings, relay_env: None) -> Iterator[LiveApi]:
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
async def event_(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=20)


class Buyer:
    """A signed-in fan holding through the API, with a key per hold."""

    def __init__(self, http: httpx.AsyncClient, token: str, event: SmallEvent) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.event = event

    async def hold(self, **selection: Any) -> dict[str, Any]:
        answer = await self.http.post(
            "/holds",
            json={"event_id": str(self.event.event_id), **selection},
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    async def release(self, hold_id: str) -> None:
        answer = await self.http.delete(f"/holds/{hold_id}", headers=self.headers)
        assert answer.status_code == 200, answer.text


async def _buyer(session: AsyncSession, http: httpx.AsyncClient, event: SmallEvent) -> Buyer:
    _, token = await make_signed_in_fan(session)
    return Buyer(http, token, event)


def _path(event: SmallEvent) -> str:
    return f"/events/{event.event_id}/seatmap/stream"


def _unavailable_seats(change: Sse) -> set[int]:
    return {
        seat
        for group in change.json()["units"]
        if group["state"] == "unavailable"
        for seat in group["seat_ids"]
    }


def _remaining(change: Sse) -> dict[str, int]:
    return {tier["tier_id"]: tier["remaining"] for tier in change.json()["tiers"]}


async def _change_entry(buyer: Buyer, seat: int) -> None:
    """One seat held and relayed: one more entry in the event's history."""
    await buyer.hold(seat_ids=[seat])
    assert (await relay_outbox())["delivered"] == 1


async def test_a_fan_sees_another_fans_hold_within_a_second(
    http: httpx.AsyncClient, session: AsyncSession, event_: SmallEvent
) -> None:
    other = await _buyer(session, http, event_)
    async with http.stream("GET", _path(event_)) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        reader = SseReader(stream)
        opening = await reader.block()
        assert opening.retry is not None
        assert 2000 <= opening.retry <= 5000
        first = await reader.event()
        assert first.event == "snapshot-version"
        assert first.json() == {"version": 0}

        seat = event_.seat_ids[3]
        await other.hold(seat_ids=[seat])
        # From the hold's answer: the relay's round (run here at once) and the delivery.
        held_at = time.monotonic()
        await relay_outbox()
        change = await reader.event(within=1.0)
        assert time.monotonic() - held_at < 1.0
    assert change.event == "change"
    assert change.id is not None
    assert live.entry_order(change.id) is not None
    body = change.json()
    assert body["event_id"] == str(event_.event_id)
    # The hold's request moved the version once, the relay once more.
    assert body["version"] == 2
    assert _unavailable_seats(change) == {seat}
    assert _remaining(change) == {str(event_.seat_tier_id): 9}


async def test_a_ga_hold_and_release_carry_the_places_left(
    http: httpx.AsyncClient, session: AsyncSession, event_: SmallEvent
) -> None:
    fan = await _buyer(session, http, event_)
    async with http.stream("GET", _path(event_)) as stream:
        reader = SseReader(stream)
        assert (await reader.event()).event == "snapshot-version"
        held = await fan.hold(tier_id=str(event_.ga_tier_id), quantity=3)
        await relay_outbox()
        taken = await reader.event(within=2)
        await fan.release(held["id"])
        await relay_outbox()
        freed = await reader.event(within=2)
    assert _remaining(taken) == {str(event_.ga_tier_id): 17}
    [group] = taken.json()["units"]
    assert group["state"] == "unavailable"
    assert sorted(group["unit_ids"]) == sorted(item["unit_id"] for item in held["items"])
    assert group["seat_ids"] == []
    assert _remaining(freed) == {str(event_.ga_tier_id): 20}
    assert [g["state"] for g in freed.json()["units"]] == ["available"]
    assert freed.json()["version"] > taken.json()["version"]
    assert live.entry_order(str(freed.id)) > live.entry_order(str(taken.id))  # type: ignore[operator]


@pytest.mark.usefixtures("quick_keepalive")
async def test_a_reconnect_inside_the_history_gets_exactly_what_it_missed(
    http: httpx.AsyncClient, session: AsyncSession, event_: SmallEvent
) -> None:
    fan = await _buyer(session, http, event_)
    await _change_entry(fan, event_.seat_ids[0])
    async with http.stream("GET", _path(event_)) as stream:
        first = await SseReader(stream).event()
    assert first.event == "snapshot-version"
    assert first.id  # the newest entry's: where a reconnect resumes from
    seen = first.id

    # While the client is away: two more changes.
    await _change_entry(fan, event_.seat_ids[1])
    await _change_entry(fan, event_.seat_ids[2])

    async with http.stream("GET", _path(event_), headers={"Last-Event-ID": seen}) as stream:
        reader = SseReader(stream)
        missed = await reader.until_quiet()
        assert [_unavailable_seats(change) for change in missed] == [
            {event_.seat_ids[1]},
            {event_.seat_ids[2]},
        ]
        assert all(change.event == "change" for change in missed)
        # And it goes on live, without repeating anything.
        await _change_entry(fan, event_.seat_ids[4])
        assert _unavailable_seats(await reader.event(within=2)) == {event_.seat_ids[4]}

    # From the first of the missed: only the second (and the one after).
    async with http.stream("GET", _path(event_), headers={"Last-Event-ID": str(missed[0].id)}) as stream:
        again = await SseReader(stream).until_quiet()
    assert [change.id for change in again[:1]] == [missed[1].id]
    assert len(again) == 2

    # Up to date: nothing to send.
    async with http.stream("GET", _path(event_), headers={"Last-Event-ID": str(again[-1].id)}) as stream:
        assert await SseReader(stream).until_quiet() == []


@pytest.mark.parametrize(
    "last_event_id",
    [
        pytest.param("trimmed", id="older-than-the-history"),
        pytest.param("1-0", id="an-id-never-given"),
        pytest.param("99999999999999999999-0", id="past-64-bits"),
        pytest.param("garbage", id="not-an-id"),
    ],
)
async def test_a_reconnect_the_history_cannot_serve_is_told_to_refetch_and_goes_on_live(
    http: httpx.AsyncClient,
    session: AsyncSession,
    event_: SmallEvent,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    last_event_id: str,
) -> None:
    monkeypatch.setattr(live, "HISTORY_MESSAGES", 2)
    redis = Redis.from_url(redis_url)
    fan = await _buyer(session, http, event_)
    await _change_entry(fan, event_.seat_ids[0])
    async with http.stream("GET", _path(event_)) as stream:
        oldest = (await SseReader(stream).event()).id
    for seat in event_.seat_ids[1:4]:
        await _change_entry(fan, seat)
    if last_event_id == "trimmed":
        last_event_id = str(oldest)
    newest = redis.xrevrange(live.stream_key(event_.event_id), count=1)[0][0].decode()
    version = int(redis.get(seatmap_version_key(str(event_.event_id))) or 0)
    assert redis.xlen(live.stream_key(event_.event_id)) == 2

    async with http.stream("GET", _path(event_), headers={"Last-Event-ID": last_event_id}) as stream:
        reader = SseReader(stream)
        refetch = await reader.event()
        assert refetch.event == "refetch"
        assert refetch.json() == {"version": version, "reason": "not-in-history"}
        # The client's Last-Event-ID moves to the history's end: having refetched, it
        # resumes from there next time.
        assert refetch.id == newest
        await _change_entry(fan, event_.seat_ids[5])
        assert _unavailable_seats(await reader.event(within=2)) == {event_.seat_ids[5]}


async def test_an_empty_last_event_id_is_a_first_connection(
    http: httpx.AsyncClient, event_: SmallEvent
) -> None:
    async with http.stream("GET", _path(event_), headers={"Last-Event-ID": ""}) as stream:
        assert (await SseReader(stream).event()).event == "snapshot-version"


async def test_idle_streams_do_not_count_against_the_in_flight_bound(
    settings: Settings, relay_env: None, event_: SmallEvent
) -> None:
    # A bound of 4 admits 3 new requests at once: more streams than that stay open, and the
    # API still answers.
    bounded = LiveApi(settings.model_copy(update={"max_in_flight": 4}))
    bounded.start()
    try:
        async with httpx.AsyncClient(base_url=bounded.url, timeout=10) as client:
            streams = [client.stream("GET", _path(event_)) for _ in range(6)]
            opened = [await stream.__aenter__() for stream in streams]
            # Readers kept: a reader dropped closes its stream when it is collected.
            readers = [SseReader(response) for response in opened]
            try:
                for response, reader in zip(opened, readers, strict=True):
                    assert response.status_code == 200
                    assert (await reader.event()).event == "snapshot-version"
                detail = await client.get(f"/events/{event_.event_id}")
                assert detail.status_code == 200, detail.text
            finally:
                for stream in streams:
                    await stream.__aexit__(None, None, None)
    finally:
        bounded.stop()


async def test_a_fan_too_slow_to_keep_up_is_told_to_refetch(
    http: httpx.AsyncClient, server: LiveApi, session: AsyncSession, event_: SmallEvent
) -> None:
    fan = await _buyer(session, http, event_)
    assert server.app is not None
    plugin = server.app.state.seatmap_feed.plugin
    async with http.stream("GET", _path(event_)) as stream:
        reader = SseReader(stream)
        assert (await reader.event()).event == "snapshot-version"
        [subscriber] = plugin._channels[live.channel(event_.event_id)]
        # As if its backlog had filled while the client was not reading.
        subscriber.fell_behind = True
        await _change_entry(fan, event_.seat_ids[0])
        told = await reader.event(within=2)
        assert told.event == "refetch"
        assert told.json()["reason"] == "behind"
        await _change_entry(fan, event_.seat_ids[1])
        assert _unavailable_seats(await reader.event(within=2)) == {event_.seat_ids[1]}


async def test_past_its_watchers_a_process_refuses_new_streams(
    http: httpx.AsyncClient, event_: SmallEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seatmap_stream, "MAX_WATCHERS", 1)
    async with http.stream("GET", _path(event_)) as stream:
        reader = SseReader(stream)  # kept: a reader dropped closes its stream when collected
        assert (await reader.event()).event == "snapshot-version"
        refused = await http.get(_path(event_))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["type"].endswith("/seatmap-stream-unavailable")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        async with http.stream("GET", _path(event_)) as stream:
            if stream.status_code == 200:
                break
        await asyncio.sleep(0.05)
    assert stream.status_code == 200  # room again once the first one left


def test_a_subscriber_whose_client_stopped_reading_can_still_be_ended() -> None:
    async def scenario() -> None:
        plugin = seatmap_stream.SeatmapFeed("redis://127.0.0.1:1/0").plugin
        subscriber = seatmap_stream.SeatmapSubscriber(plugin, max_backlog=2)
        assert subscriber.put_nowait(b"1")
        assert subscriber.put_nowait(b"2")
        assert not subscriber.put_nowait(b"3")
        assert subscriber.fell_behind
        # What the plugin does to end it: with the queue full this would wait for ever.
        await asyncio.wait_for(subscriber.put(None), 1)
        assert await asyncio.wait_for(subscriber.get(), 1) is None

    asyncio.run(scenario())


async def test_a_stream_ends_when_its_client_goes_and_leaves_nothing_behind(
    http: httpx.AsyncClient, server: LiveApi, event_: SmallEvent
) -> None:
    for _ in range(3):
        async with http.stream("GET", _path(event_)) as stream:
            assert (await SseReader(stream).event()).event == "snapshot-version"
    assert server.app is not None
    plugin = server.app.state.seatmap_feed.plugin
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not plugin._channels.get(live.channel(event_.event_id)):
            break
        await asyncio.sleep(0.05)
    assert not plugin._channels.get(live.channel(event_.event_id))
    assert server.app.state.seatmap_feed.backend._positions == {}


# --- refused before any stream (the in-process client is enough) ---------------------------


async def test_an_unknown_or_unpublished_event_has_no_stream(
    api: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent
) -> None:
    for ref in (str(uuid.uuid4()), "no-such-slug", "x" * 500):
        answer = await api.get(f"/events/{ref}/seatmap/stream")
        assert answer.status_code == 404, ref
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["type"].endswith("/event-not-found")
    await session.execute(text("UPDATE events SET status = 'draft' WHERE id = :id"), {"id": event_.event_id})
    await session.commit()
    answer = await api.get(_path(event_))
    assert answer.status_code == 404
    assert answer.json()["type"].endswith("/event-not-found")


async def test_a_last_event_id_past_its_length_is_refused(
    api: AsyncTestClient[Litestar], event_: SmallEvent
) -> None:
    answer = await api.get(_path(event_), headers={"Last-Event-ID": "1" * 65})
    assert answer.status_code == 400
    assert answer.json()["type"].endswith("/invalid-request")


async def test_while_redis_is_known_away_a_new_stream_is_refused_at_once(
    api: AsyncTestClient[Litestar], event_: SmallEvent
) -> None:
    api.app.state.redis_breaker.failed()
    answer = await api.get(_path(event_))
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["type"].endswith("/seatmap-stream-unavailable")
