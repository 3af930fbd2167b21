"""The waiting room over HTTP: a fan's way through it to a hold and a checkout, each refusal
at the gate with its own problem type, and the staff routes that run a room.

The admission tick is the service's own, called with a clock a few seconds ahead (what the
worker daemon would do a moment later)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.db import make_sessionmaker
from booking.payments import offline
from booking.waiting_room import service as rooms
from booking.waiting_room import tokens
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, make_event

PROBLEM = "application/problem+json"
RATE = 6000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=10)


async def open_room(
    session: AsyncSession, event_id: uuid.UUID, api: AsyncTestClient[Litestar] | None = None, **settings: Any
) -> rooms.RoomSettings:
    """A room whose sale opened a minute ago. Commits; with ``api``, its process sees the
    room at once (instead of within a second)."""
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {"enabled": True, "sale_opens_at": now - dt.timedelta(minutes=1)} | settings
    room = await rooms.set_room(session, event_id, now=now - dt.timedelta(minutes=2), **values)
    await session.commit()
    if api is not None:
        api.app.state.waiting_rooms.forget()
    return room


async def admit(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, event_id: uuid.UUID
) -> list[uuid.UUID]:
    """The daemon's next tick, a few seconds from now."""
    result = await rooms.tick(
        sessions, redis, event_id, now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    )
    return list(result.admitted)


def code(response: Any) -> str:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    return str(response.json()["type"]).rsplit("/", 1)[1]


async def hold(
    api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent, seat: int, token: str | None = None
) -> Any:
    headers = {**fan.headers, "Idempotency-Key": uuid.uuid4().hex}
    if token is not None:
        headers["Admission-Token"] = token
    return await api.post(
        "/holds", json={"event_id": str(event.event_id), "seat_ids": [seat]}, headers=headers
    )


async def admitted_token(
    api: AsyncTestClient[Litestar],
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    fan: SignedIn,
    event_id: uuid.UUID,
) -> str:
    joined = await api.post(f"/events/{event_id}/queue", headers=fan.headers)
    assert joined.status_code == 200, joined.text
    assert fan.fan_id in await admit(sessions, redis, event_id)
    me = await api.get(f"/events/{event_id}/queue/me", headers=fan.headers)
    assert me.json()["state"] == "admitted", me.text
    return str(me.json()["admission"]["token"])


async def test_a_fan_waits_is_admitted_and_buys_with_the_token(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    event: SmallEvent,
    fan_a: SignedIn,
    fan_b: SignedIn,
) -> None:
    await open_room(session, event.event_id, api, rate_per_minute=RATE)
    queue = f"/events/{event.event_id}/queue"
    joined = await api.post(queue, headers=fan_a.headers)
    assert joined.status_code == 200, joined.text
    body = joined.json()
    assert (body["state"], body["position"], body["fans_ahead"]) == ("queued", 1, 0)
    assert body["admission"] is None
    assert body["admission_rate_per_minute"] == RATE
    assert body["rate_measured"] is False
    assert body["check_every_seconds"] == 15
    second = (await api.post(queue, headers=fan_b.headers)).json()
    assert (second["position"], second["fans_ahead"]) == (2, 1)
    assert second["estimated_wait_seconds"] == pytest.approx(2 * 60 / RATE, abs=0.1)
    # Joining again changes nothing; the slug names the same event.
    slug = await session.scalar(text("SELECT slug FROM events WHERE id = :e"), {"e": event.event_id})
    again = await api.post(f"/events/{slug}/queue", headers=fan_a.headers)
    assert again.json()["position"] == 1

    # Not yet admitted: the hold is refused, and nothing is held.
    refused = await hold(api, fan_a, event, event.seat_ids[0])
    assert (refused.status_code, code(refused)) == (403, "admission-required")
    assert sorted(await admit(sessions, redis, event.event_id)) == sorted([fan_a.fan_id, fan_b.fan_id])
    me = (await api.get(f"{queue}/me", headers=fan_a.headers)).json()
    assert me["state"] == "admitted"
    token = me["admission"]["token"]
    assert dt.datetime.fromisoformat(me["admission"]["expires_at"]) > dt.datetime.now(dt.UTC) + dt.timedelta(
        minutes=9
    )
    # The same token every time it is asked for.
    assert (await api.get(f"{queue}/me", headers=fan_a.headers)).json()["admission"]["token"] == token

    held = await hold(api, fan_a, event, event.seat_ids[0], token)
    assert held.status_code == 201, held.text
    checkout = f"/holds/{held.json()['id']}/checkout"
    paying = {"provider": "offline", "card_number": offline.SUCCESS}
    no_token = await api.post(checkout, json=paying, headers=fan_a.headers)
    assert (no_token.status_code, code(no_token)) == (403, "admission-required")
    paid = await api.post(checkout, json=paying, headers={**fan_a.headers, "Admission-Token": token})
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "confirmed"


async def test_each_wrong_admission_gets_its_own_problem_and_holds_nothing(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    event: SmallEvent,
    fan_a: SignedIn,
    fan_b: SignedIn,
) -> None:
    other = await make_event(session, seats=2, ga_capacity=2)
    plain = await make_event(session, seats=2, ga_capacity=2)
    # A ticket code, bought where there is no room.
    bought = await hold(api, fan_a, plain, plain.seat_ids[0])
    order = await api.post(
        f"/holds/{bought.json()['id']}/checkout",
        json={"provider": "offline", "card_number": offline.SUCCESS},
        headers=fan_a.headers,
    )
    lines = (await api.get(f"/orders/{order.json()['order_id']}", headers=fan_a.headers)).json()["lines"]
    ticket_code = (await api.get(f"/tickets/{lines[0]['ticket_id']}", headers=fan_a.headers)).json()["token"]

    await open_room(session, event.event_id, api, rate_per_minute=RATE)
    await open_room(session, other.event_id, api, rate_per_minute=RATE)
    token_a = await admitted_token(api, sessions, redis, fan_a, event.event_id)
    token_b = await admitted_token(api, sessions, redis, fan_b, event.event_id)
    token_other_event = await admitted_token(api, sessions, redis, fan_a, other.event_id)
    key = api.app.state.signing_keys.ticket_key
    expired = tokens.sign(
        key,
        event_id=event.event_id,
        fan_id=fan_a.fan_id,
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
    )
    kid, payload, signature = token_a.split(".")
    forged = f"{kid}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BA'}"
    cases = {
        None: "admission-required",
        "": "admission-required",
        "not a token at all": "admission-token-invalid",
        forged: "admission-token-invalid",
        ticket_code: "admission-token-invalid",
        expired: "admission-token-expired",
        token_b: "admission-token-other-fan",
        token_other_event: "admission-token-other-event",
    }
    holds_before = await session.scalar(text("SELECT count(*) FROM holds"))
    for token, expected in cases.items():
        refused = await hold(api, fan_a, event, event.seat_ids[1], token)
        assert (refused.status_code, code(refused)) == (403, expected), token

    # The fan gives the admission up: the token is refused from then on.
    given_up = await api.delete(f"/events/{event.event_id}/queue/me", headers=fan_a.headers)
    assert given_up.status_code == 200, given_up.text
    assert given_up.json()["state"] == "ended"
    assert given_up.json()["admission"]["token"] is None
    revoked = await hold(api, fan_a, event, event.seat_ids[1], token_a)
    assert (revoked.status_code, code(revoked)) == (403, "admission-revoked")
    assert await session.scalar(text("SELECT count(*) FROM holds")) == holds_before
    # The admission is spent: joining again shows it ended, it does not open a new window.
    rejoined = (await api.post(f"/events/{event.event_id}/queue", headers=fan_a.headers)).json()
    assert rejoined["state"] == "ended"
    # The ticket code still is one, and the admission token never passes as one.
    gate = await create_key(session, f"gate-{uuid.uuid4().hex[:6]}", StaffRole.GATE)
    await session.commit()
    scan = await api.post(
        "/staff/checkin",
        json={"token": token_b, "gate": "north-1"},
        headers={"Authorization": f"Bearer {gate.secret}"},
    )
    assert scan.status_code in (400, 422), scan.text
    assert code(scan).startswith("ticket-")


async def test_a_room_that_is_not_enabled_gates_nothing(
    api: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent, fan_a: SignedIn
) -> None:
    await open_room(session, event.event_id, api, enabled=False)
    held = await hold(api, fan_a, event, event.seat_ids[0])
    assert held.status_code == 201, held.text
    joining = await api.post(f"/events/{event.event_id}/queue", headers=fan_a.headers)
    assert (joining.status_code, code(joining)) == (409, "waiting-room-not-active")


async def test_the_queue_refuses_clearly(
    api: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent, fan_a: SignedIn
) -> None:
    queue = f"/events/{event.event_id}/queue"
    no_room = await api.post(queue, headers=fan_a.headers)
    assert (no_room.status_code, code(no_room)) == (409, "waiting-room-not-active")
    unknown = await api.post(f"/events/{uuid.uuid4()}/queue", headers=fan_a.headers)
    assert (unknown.status_code, code(unknown)) == (404, "event-not-found")
    assert (await api.post(queue)).status_code == 401
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await open_room(session, event.event_id, api, opens_at=later, sale_opens_at=later + dt.timedelta(hours=1))
    early = await api.post(queue, headers=fan_a.headers)
    assert (early.status_code, code(early)) == (409, "waiting-room-not-open")
    assert early.json()["opens_at"] == later.isoformat()
    await rooms.set_room(session, event.event_id, clear=["opens_at"], now=dt.datetime.now(dt.UTC))
    await session.commit()
    api.app.state.waiting_rooms.forget()
    nowhere = await api.get(f"{queue}/me", headers=fan_a.headers)
    assert (nowhere.status_code, code(nowhere)) == (404, "queue-place-not-found")
    # Before the sale opens a fan waits for the draw: no position yet.
    waiting = (await api.post(queue, headers=fan_a.headers)).json()
    assert (waiting["state"], waiting["position"], waiting["estimated_wait_seconds"]) == (
        "waiting",
        None,
        None,
    )
    left = await api.delete(f"{queue}/me", headers=fan_a.headers)
    assert left.json()["state"] == "left"
    again = await api.delete(f"{queue}/me", headers=fan_a.headers)
    assert (again.status_code, code(again)) == (404, "queue-place-not-found")
    stream = await api.get(f"{queue}/me/stream", headers=fan_a.headers)
    assert (stream.status_code, code(stream)) == (404, "queue-place-not-found")


# --- staff -----------------------------------------------------------------------------


@pytest.fixture
async def keys(session: AsyncSession) -> dict[StaffRole, dict[str, str]]:
    issued = {
        role: await create_key(session, f"wr-{role.value}-{uuid.uuid4().hex[:6]}", role) for role in StaffRole
    }
    await session.commit()
    return {role: {"Authorization": f"Bearer {key.secret}"} for role, key in issued.items()}


async def test_staff_set_watch_pause_and_resume_a_room(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    event: SmallEvent,
    keys: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
) -> None:
    room = f"/staff/events/{event.event_id}/waiting-room"
    call = keys[StaffRole.ON_CALL]
    missing = await api.get(room, headers=call)
    assert (missing.status_code, code(missing)) == (404, "waiting-room-not-configured")
    assert (
        await api.put(room, json={"enabled": True}, headers=keys[StaffRole.BOX_OFFICE])
    ).status_code == 403

    opens = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).replace(microsecond=0)
    made = await api.put(
        room,
        json={
            "enabled": True,
            "sale_opens_at": opens.isoformat(),
            "rate_per_minute": 1200,
            "max_shoppers": 50,
        },
        headers=call,
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert (body["enabled"], body["active"], body["paused"]) == (True, True, False)
    assert (body["rate_per_minute"], body["window_seconds"], body["grace_seconds"], body["max_shoppers"]) == (
        1200,
        600,
        120,
        50,
    )
    assert (body["waiting"], body["shopping"], body["admitted_total"], body["redis_ok"]) == (0, 0, 0, True)
    # The room gates holds at once in this process.
    refused = await hold(api, fan_a, event, event.seat_ids[0])
    assert code(refused) == "admission-required"
    assert (await api.post(f"/events/{event.event_id}/queue", headers=fan_a.headers)).status_code == 200
    shown = (await api.get(room, headers=call)).json()
    assert shown["waiting"] == 1
    assert shown["eta_seconds_for_last"] == pytest.approx(60 / 1200, abs=0.1)

    for bad in (
        {"rate_per_minute": 0},
        {"rate_per_minute": 100_001},
        {"window_seconds": 30},
        {"grace_seconds": 1},
        {"max_shoppers": 0},
        {"opens_at": (opens + dt.timedelta(hours=1)).isoformat()},
        {"sale_opens_at": "2026-12-01T10:00:00"},
        {"colour": "blue"},
        [],
    ):
        answer = await api.put(room, json=bad, headers=call)
        assert (answer.status_code, code(answer)) == (400, "invalid-request"), bad
    moved = await api.put(
        room, json={"sale_opens_at": (opens + dt.timedelta(hours=1)).isoformat()}, headers=call
    )
    assert (moved.status_code, code(moved)) == (409, "waiting-room-state-conflict")
    cleared = await api.put(room, json={"max_shoppers": None}, headers=call)
    assert cleared.json()["max_shoppers"] is None

    paused = await api.post(f"{room}/pause", headers=call)
    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    assert paused.json()["eta_seconds_for_last"] is None
    place = (await api.get(f"/events/{event.event_id}/queue/me", headers=fan_a.headers)).json()
    assert (place["paused"], place["estimated_wait_seconds"]) == (True, None)
    twice = await api.post(f"{room}/pause", headers=call)
    assert (twice.status_code, code(twice)) == (409, "waiting-room-state-conflict")
    assert (await api.post(f"{room}/resume", headers=keys[StaffRole.ADMIN])).json()["paused"] is False
    not_paused = await api.post(f"{room}/resume", headers=call)
    assert (not_paused.status_code, code(not_paused)) == (409, "waiting-room-state-conflict")
    unknown = await api.post(f"/staff/events/{uuid.uuid4()}/waiting-room/pause", headers=call)
    assert (unknown.status_code, code(unknown)) == (404, "event-not-found")

    actions = (
        await session.execute(
            text(
                "SELECT action, outcome FROM audit_log WHERE action LIKE 'waiting_room.%%' AND target_id = :e ORDER BY id"
            ),
            {"e": str(event.event_id)},
        )
    ).all()
    assert ("waiting_room.set", "ok") in actions
    assert ("waiting_room.set", "denied") in actions
    assert ("waiting_room.set", "failed") in actions
    assert ("waiting_room.pause", "ok") in actions
    assert ("waiting_room.resume", "ok") in actions

    board = (await api.get("/staff/dashboard", headers=call)).json()
    (live,) = [r for r in board["waiting_rooms"] if r["event_id"] == str(event.event_id)]
    assert (live["waiting"], live["shopping"], live["rate_per_minute"]) == (1, 0, 1200)
