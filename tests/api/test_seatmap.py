"""The seat map and availability endpoints, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis import Redis
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.catalog.demo import load_demo
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from booking.inventory import seatmap
from booking.settings import Settings, get_settings
from jobs.outbox import relay_outbox, seatmap_version_key
from tests.factories import SmallEvent, advance_clock, make_event, make_fan, make_signed_in_fan

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def rebuild_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests look at the map right after each change; the spacing between rebuilds
    # has its own test in tests/integration/test_seatmap.py.
    monkeypatch.setattr(seatmap, "MIN_REBUILD_SECONDS", 0)


@pytest.fixture
def relay_env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The outbox relay reads its servers from settings, as in a worker."""
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
async def event_(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=20)


@pytest.fixture
async def client(settings: Settings, session: AsyncSession) -> AsyncIterator[AsyncTestClient[Litestar]]:
    await load_demo(session)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def _seats(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {
        seat["id"]: seat for section in body["sections"] for row in section["rows"] for seat in row["seats"]
    }


async def _hold(
    session: AsyncSession, event: SmallEvent, *, seats: list[int], ttl: dt.timedelta | None = None
) -> holds.HoldView:
    policy = HoldPolicy(ttl=ttl) if ttl else HoldPolicy()
    view = await holds.create_hold(
        session,
        owner=Owner(fan_id=await make_fan(session)),
        event_id=event.event_id,
        selection=SeatSelection(tuple(seats)),
        policy=policy,
    )
    await session.commit()
    return view


def _bump(redis_url: str, event_id: uuid.UUID) -> None:
    """What the outbox consumer does on ``units.changed``."""
    with Redis.from_url(redis_url) as redis:
        redis.incr(seatmap_version_key(str(event_id)))


async def test_the_seat_map_lists_every_seat_with_its_state_and_price(
    client: AsyncTestClient[Litestar], event_: SmallEvent
) -> None:
    response = await client.get(f"/events/{event_.event_id}/seatmap")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["etag"].startswith('W/"0-')
    assert response.headers["cache-control"] == "no-cache"
    assert "Accept-Encoding" in response.headers["vary"]
    body = response.json()
    assert body["event_id"] == str(event_.event_id)
    assert body["version"] == 0
    seats = _seats(body)
    assert sorted(seats) == sorted(event_.seat_ids)
    first = seats[event_.seat_ids[0]]
    assert first == {
        "id": event_.seat_ids[0],
        "number": "1",
        "x": 0.0,
        "y": 0.0,
        "accessible": False,
        "tier_id": str(event_.seat_tier_id),
        "price": {"amount_minor": 5000, "currency": "GBP"},
        "state": "available",
    }
    assert [s["name"] for s in body["sections"]] == ["Stalls"]
    assert [r["label"] for r in body["sections"][0]["rows"]] == ["A"]
    assert body["ga_areas"] == [
        {
            "id": str(event_.ga_area_id),
            "name": "Floor",
            "remaining": 20,
            "tiers": [
                {
                    "tier_id": str(event_.ga_tier_id),
                    "price": {"amount_minor": 3000, "currency": "GBP"},
                    "remaining": 20,
                }
            ],
        }
    ]
    assert {t["kind"] for t in body["tiers"]} == {"seated", "ga"}


async def test_a_demo_map_has_one_entry_per_seat_unit(
    client: AsyncTestClient[Litestar], session: AsyncSession
) -> None:
    event_id, units = (
        await session.execute(
            text(
                "SELECT event_id, count(*) FROM inventory_units WHERE seat_id IS NOT NULL"
                " GROUP BY event_id ORDER BY count(*) DESC LIMIT 1"
            )
        )
    ).one()
    seats = _seats((await client.get(f"/events/{event_id}/seatmap")).json())
    assert len(seats) == units
    assert any(seat["accessible"] for seat in seats.values())


async def test_a_relayed_hold_shows_its_seat_unavailable_under_a_new_etag(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent, relay_env: None
) -> None:
    before = await client.get(f"/events/{event_.event_id}/seatmap")
    await _hold(session, event_, seats=event_.seat_ids[:2])

    # Not yet relayed: the cached snapshot is still served, as documented.
    stale = await client.get(f"/events/{event_.event_id}/seatmap")
    assert stale.headers["etag"] == before.headers["etag"]

    assert (await relay_outbox())["delivered"] >= 1
    after = await client.get(f"/events/{event_.event_id}/seatmap")
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    body = after.json()
    assert body["version"] >= 1
    seats = _seats(body)
    assert {seat for seat, s in seats.items() if s["state"] == "unavailable"} == set(event_.seat_ids[:2])
    # Nothing says who holds them.
    assert set(seats[event_.seat_ids[0]]) == {
        "id",
        "number",
        "x",
        "y",
        "accessible",
        "tier_id",
        "price",
        "state",
    }


async def test_a_ga_hold_lowers_the_area_count_after_a_version_bump(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent, redis_url: str
) -> None:
    await client.get(f"/events/{event_.event_id}/seatmap")
    await holds.create_hold(
        session,
        owner=Owner(fan_id=await make_fan(session)),
        event_id=event_.event_id,
        selection=GASelection(event_.ga_tier_id, 3),
        policy=HoldPolicy(),
    )
    await session.commit()
    _bump(redis_url, event_.event_id)
    body = (await client.get(f"/events/{event_.event_id}/seatmap")).json()
    assert body["ga_areas"][0]["remaining"] == 17
    assert body["ga_areas"][0]["tiers"][0]["remaining"] == 17


async def test_if_none_match_with_the_current_etag_is_304_without_a_body(
    client: AsyncTestClient[Litestar], event_: SmallEvent, redis_url: str
) -> None:
    url = f"/events/{event_.event_id}/seatmap"
    etag = (await client.get(url)).headers["etag"]
    for header in (etag, f'"nope", {etag}', etag.removeprefix("W/"), "*"):
        response = await client.get(url, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert (await client.get(url, headers={"If-None-Match": '"other"'})).status_code == 200

    _bump(redis_url, event_.event_id)
    changed = await client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["version"] == 1


async def test_a_seat_held_past_its_deadline_shows_available(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent
) -> None:
    await _hold(session, event_, seats=[event_.seat_ids[0]])
    await advance_clock(session, 3600)
    # No expiry job ran: the hold row is still active, the unit still 'held' in its row.
    assert await session.scalar(text("SELECT count(*) FROM inventory_units WHERE state = 'held'")) == 1
    body = (await client.get(f"/events/{event_.event_id}/seatmap")).json()
    assert _seats(body)[event_.seat_ids[0]]["state"] == "available"


async def test_a_cached_map_frees_a_seat_when_its_hold_expires_without_any_relay(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent
) -> None:
    url = f"/events/{event_.event_id}/seatmap"
    view = await _hold(session, event_, seats=[event_.seat_ids[0]], ttl=dt.timedelta(seconds=1))
    first = await client.get(url)
    assert _seats(first.json())[event_.seat_ids[0]]["state"] == "unavailable"
    await asyncio.sleep(max((view.expires_at - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 0.3)
    # No version bump happened; the snapshot knew when its held seat would come free.
    second = await client.get(url)
    assert second.json()["version"] == first.json()["version"]
    assert _seats(second.json())[event_.seat_ids[0]]["state"] == "available"
    assert second.headers["etag"] != first.headers["etag"]


async def test_a_cached_map_is_served_without_touching_postgresql(
    client: AsyncTestClient[Litestar], event_: SmallEvent, redis_url: str
) -> None:
    url = f"/events/{event_.event_id}/seatmap"
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = client.app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        first = await client.get(url)
        built = len(statements)
        assert built > 0
        with Redis.from_url(redis_url) as redis:
            assert redis.exists(f"boxoffice:event:{{{event_.event_id}}}:seatmap:meta")
        for _ in range(5):
            again = await client.get(url)
            assert again.content == first.content
        assert (await client.get(url, headers={"If-None-Match": first.headers["etag"]})).status_code == 304
        assert len(statements) == built
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_concurrent_first_requests_rebuild_once(
    client: AsyncTestClient[Litestar], event_: SmallEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = 0
    load_states = seatmap.load_states

    async def slow_counted(session: AsyncSession, event_id: uuid.UUID) -> seatmap.SeatStates:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.3)  # keep the rebuild open while the others arrive
        return await load_states(session, event_id)

    monkeypatch.setattr(seatmap, "load_states", slow_counted)
    responses = await asyncio.gather(*(client.get(f"/events/{event_.event_id}/seatmap") for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.headers["etag"] for r in responses}) == 1
    assert builds == 1


async def test_the_map_is_gzip_compressed_when_the_client_accepts_it(
    client: AsyncTestClient[Litestar], event_: SmallEvent
) -> None:
    url = f"/events/{event_.event_id}/seatmap"
    zipped = await client.get(url, headers={"Accept-Encoding": "gzip"})
    plain = await client.get(url, headers={"Accept-Encoding": "identity"})
    refused = await client.get(url, headers={"Accept-Encoding": "gzip;q=0"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert "content-encoding" not in refused.headers
    assert zipped.json() == plain.json() == refused.json()
    assert zipped.headers["etag"] == plain.headers["etag"]


async def test_availability_counts_per_tier_and_catches_up_within_a_second(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent
) -> None:
    url = f"/events/{event_.event_id}/availability"
    body = (await client.get(url)).json()
    assert body["event_id"] == str(event_.event_id)
    remaining = {t["tier_id"]: t for t in body["tiers"]}
    assert remaining[str(event_.seat_tier_id)]["remaining"] == 10
    assert remaining[str(event_.seat_tier_id)]["kind"] == "seated"
    assert remaining[str(event_.ga_tier_id)]["remaining"] == 20
    assert remaining[str(event_.ga_tier_id)]["ga_area_id"] == str(event_.ga_area_id)
    assert remaining[str(event_.ga_tier_id)]["price"] == {"amount_minor": 3000, "currency": "GBP"}

    await _hold(session, event_, seats=event_.seat_ids[:2])
    await holds.create_hold(
        session,
        owner=Owner(fan_id=await make_fan(session)),
        event_id=event_.event_id,
        selection=GASelection(event_.ga_tier_id, 3),
        policy=HoldPolicy(),
    )
    await session.commit()
    # No relay, no version bump: the cached count (at most a second old) catches up alone.
    assert await _remaining_once_caught_up(client, url) == {
        str(event_.seat_tier_id): 8,
        str(event_.ga_tier_id): 17,
    }

    await advance_clock(session, 3600)
    assert await _remaining_once_caught_up(client, url) == {
        str(event_.seat_tier_id): 10,
        str(event_.ga_tier_id): 20,
    }


async def _remaining_once_caught_up(client: AsyncTestClient[Litestar], url: str) -> dict[str, int]:
    """The counts once the cached answer has expired (it lives a second): what a fan polling
    availability sees after a change."""
    await asyncio.sleep(1.1)
    return {t["tier_id"]: t["remaining"] for t in (await client.get(url)).json()["tiers"]}


@pytest.mark.parametrize("what", ["seatmap", "availability"])
async def test_an_unknown_or_unpublished_event_is_a_404_problem(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent, what: str
) -> None:
    for event_id in (uuid.uuid4(), uuid.uuid4()):
        response = await client.get(f"/events/{event_id}/{what}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["type"] == "https://boxoffice.dev/problems/event-not-found"

    await session.execute(text("UPDATE events SET status = 'draft' WHERE id = :e"), {"e": event_.event_id})
    await session.commit()
    draft = await client.get(f"/events/{event_.event_id}/{what}")
    assert draft.status_code == 404
    assert draft.json()["type"] == "https://boxoffice.dev/problems/event-not-found"


@pytest.mark.parametrize("what", ["seatmap", "availability"])
@pytest.mark.parametrize("bad", ["nope", "1", "00000000-0000-0000-0000", "%00", "x" * 300])
async def test_a_malformed_event_id_is_a_problem_not_a_server_error(
    client: AsyncTestClient[Litestar], what: str, bad: str
) -> None:
    response = await client.get(f"/events/{bad}/{what}")
    assert response.status_code in (400, 404)
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_malformed_if_none_match_is_ignored(
    client: AsyncTestClient[Litestar], event_: SmallEvent
) -> None:
    url = f"/events/{event_.event_id}/seatmap"
    for header in (",,,", "W/", '"unterminated', " "):
        assert (await client.get(url, headers={"If-None-Match": header})).status_code == 200


async def _hold_over_http(
    client: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent, seats: list[int]
) -> httpx.Response:
    """A new fan's ``POST /holds`` for ``seats``: the response."""
    _, token = await make_signed_in_fan(session)
    return await client.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": seats},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
    )


async def test_a_hold_made_through_the_api_shows_on_the_map_without_any_relay(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent
) -> None:
    # No worker runs here: the hold's own request moves the map's version before answering.
    url = f"/events/{event_.event_id}/seatmap"
    before = await client.get(url)
    held = await _hold_over_http(client, session, event_, event_.seat_ids[:1])
    assert held.status_code == 201, held.text
    after = await client.get(url)
    assert after.headers["etag"] != before.headers["etag"]
    assert _seats(after.json())[event_.seat_ids[0]]["state"] == "unavailable"


async def test_a_refused_hold_moves_no_version(
    client: AsyncTestClient[Litestar], session: AsyncSession, event_: SmallEvent, redis_url: str
) -> None:
    refused = await _hold_over_http(client, session, event_, [event_.seat_ids[0], 10**12])
    assert refused.status_code == 400, refused.text
    with Redis.from_url(redis_url) as redis:
        assert redis.get(seatmap_version_key(str(event_.event_id))) is None


async def test_without_redis_the_map_comes_from_postgresql_and_says_so(
    settings: Settings, session: AsyncSession, event_: SmallEvent
) -> None:
    # Port 1 on loopback: nothing listens, every Redis call is refused at once.
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with AsyncTestClient(app=create_app(broken)) as client:
        url = f"/events/{event_.event_id}/seatmap"
        first = await client.get(url)
        assert first.status_code == 200, first.text
        assert first.headers["boxoffice-degraded"] == "redis-unavailable"
        assert len(_seats(first.json())) == len(event_.seat_ids)
        assert (await client.get(url, headers={"If-None-Match": first.headers["etag"]})).status_code == 304
        # Holds go on (the sale is decided in PostgreSQL), and the map shows them within a
        # second although no version can be bumped.
        held = await _hold_over_http(client, session, event_, event_.seat_ids[:1])
        assert held.status_code == 201, held.text
        for _ in range(30):
            state = _seats((await client.get(url)).json())[event_.seat_ids[0]]["state"]
            if state == "unavailable":
                break
            await asyncio.sleep(0.1)
        assert state == "unavailable"
        ready = await client.get("/ready")
    # Serving, but not ready: a load balancer with other processes prefers those.
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["status"] == "unavailable"
    assert ready.json()["checks"]["database"]["status"] == "ok"
