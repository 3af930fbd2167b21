"""Holds over HTTP: each outcome a fan can meet, and no fan reaching another's hold."""

from __future__ import annotations

import uuid

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, advance_clock, make_event

CHECKOUT = {"provider": "offline", "card_number": "4242424242424242"}

PROBLEM = "application/problem+json"


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=3)


async def hold(
    api: AsyncTestClient[Litestar], fan: SignedIn, body: dict[str, object], key: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {**fan.headers, "Idempotency-Key": key or uuid.uuid4().hex}
    response = await api.post("/holds", json=body, headers=headers)
    return response.status_code, response.json()


def problem_code(body: dict[str, object]) -> str:
    return str(body["type"]).rsplit("/", 1)[1]


async def test_a_seat_hold_and_its_lifecycle(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    status, body = await hold(api, fan_a, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:2]})
    assert status == 201, body
    assert body["state"] == "active"
    assert body["quantity"] == 2
    assert [i["seat_id"] for i in body["items"]] == event.seat_ids[:2]  # type: ignore[index,union-attr]
    assert body["total"]["amount_minor"] == sum(i["price"]["amount_minor"] for i in body["items"])  # type: ignore[index,union-attr]
    hold_id = body["id"]

    shown = await api.get(f"/holds/{hold_id}", headers=fan_a.headers)
    assert shown.json() == body
    renewed = await api.post(f"/holds/{hold_id}/renew", headers={**fan_a.headers, "Idempotency-Key": "r1"})
    assert renewed.status_code == 200
    assert renewed.json()["renewals"] == 1
    assert renewed.json()["expires_at"] > body["expires_at"]  # type: ignore[operator]
    released = await api.delete(f"/holds/{hold_id}", headers=fan_a.headers)
    assert released.status_code == 200
    assert released.json()["state"] == "released"
    held = await session.scalar(text("SELECT count(*) FROM inventory_units WHERE state = 'held'"))
    assert held == 0


async def test_a_ga_hold(api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn) -> None:
    status, body = await hold(
        api, fan_a, {"event_id": str(event.event_id), "tier_id": str(event.ga_tier_id), "quantity": 2}
    )
    assert status == 201, body
    assert body["quantity"] == 2
    assert all(i["seat_id"] is None for i in body["items"])  # type: ignore[union-attr,index]


async def test_the_idempotency_key_is_required_and_a_retry_gets_the_same_hold(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    payload = {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]}
    missing = await api.post("/holds", json=payload, headers=fan_a.headers)
    assert missing.status_code == 400
    assert problem_code(missing.json()) == "idempotency-key-required"
    first = await api.post("/holds", json=payload, headers={**fan_a.headers, "Idempotency-Key": "k1"})
    again = await api.post("/holds", json=payload, headers={**fan_a.headers, "Idempotency-Key": "k1"})
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await session.scalar(text("SELECT count(*) FROM holds")) == 1


async def test_each_refusal_has_its_own_problem_type(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, fan_b: SignedIn, session: AsyncSession
) -> None:
    e = str(event.event_id)
    assert (await hold(api, fan_a, {"event_id": e, "seat_ids": event.seat_ids[:2]}))[0] == 201
    status, body = await hold(api, fan_b, {"event_id": e, "seat_ids": event.seat_ids[1:3]})
    assert (status, problem_code(body)) == (409, "seats-taken")
    assert body["seat_ids"] == [event.seat_ids[1]]

    assert (await hold(api, fan_a, {"event_id": e, "tier_id": str(event.ga_tier_id), "quantity": 3}))[
        0
    ] == 201
    status, body = await hold(api, fan_b, {"event_id": e, "tier_id": str(event.ga_tier_id), "quantity": 1})
    assert (status, problem_code(body)) == (409, "sold-out")

    status, body = await hold(api, fan_a, {"event_id": e, "seat_ids": event.seat_ids[3:7]})
    assert (status, problem_code(body)) == (409, "ticket-cap-reached")

    status, body = await hold(api, fan_b, {"event_id": e, "seat_ids": [999_999_999]})
    assert (status, problem_code(body)) == (400, "unknown-seats")

    await session.execute(text("UPDATE events SET status = 'paused' WHERE id = :e"), {"e": event.event_id})
    await session.commit()
    status, body = await hold(api, fan_b, {"event_id": e, "seat_ids": event.seat_ids[8:9]})
    assert (status, problem_code(body)) == (409, "sale-not-open")

    status, body = await hold(api, fan_b, {"event_id": str(uuid.uuid4()), "seat_ids": [1]})
    assert (status, problem_code(body)) == (404, "event-not-found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event_id": "not-a-uuid", "seat_ids": [1]},
        {"event_id": "EVENT", "seat_ids": [1], "tier_id": "TIER", "quantity": 1},
        {"event_id": "EVENT"},
        {"event_id": "EVENT", "tier_id": "TIER"},
        {"event_id": "EVENT", "tier_id": "TIER", "quantity": 0},
        {"event_id": "EVENT", "seat_ids": []},
        {"event_id": "EVENT", "seat_ids": [1, 1]},
        {"event_id": "EVENT", "seat_ids": ["a"]},
        {"event_id": "EVENT", "seat_ids": [1], "surprise": True},
    ],
)
async def test_bad_hold_requests_are_400_and_hold_nothing(
    api: AsyncTestClient[Litestar],
    event: SmallEvent,
    fan_a: SignedIn,
    session: AsyncSession,
    body: dict[str, object],
) -> None:
    filled = {
        k: (str(event.event_id) if v == "EVENT" else str(event.ga_tier_id) if v == "TIER" else v)
        for k, v in body.items()
    }
    status, answer = await hold(api, fan_a, filled)
    assert status == 400, answer
    assert await session.scalar(text("SELECT count(*) FROM holds")) == 0


async def test_no_fan_reaches_another_fans_hold(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, fan_b: SignedIn
) -> None:
    _, body = await hold(api, fan_a, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]})
    hold_id = body["id"]
    attempts = [
        api.get(f"/holds/{hold_id}", headers=fan_b.headers),
        api.post(f"/holds/{hold_id}/renew", headers={**fan_b.headers, "Idempotency-Key": "x"}),
        api.delete(f"/holds/{hold_id}", headers=fan_b.headers),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status_code == 404
        assert problem_code(response.json()) == "hold-not-found"
    missing = await api.get(f"/holds/{uuid.uuid4()}", headers=fan_b.headers)
    assert (
        missing.json()["type"] == (await api.get(f"/holds/{hold_id}", headers=fan_b.headers)).json()["type"]
    )
    anonymous = [
        await api.get(f"/holds/{hold_id}"),
        await api.post("/holds", json={}, headers={"Idempotency-Key": "anon"}),
        await api.delete(f"/holds/{hold_id}"),
    ]
    assert [r.status_code for r in anonymous] == [401, 401, 401]
    assert (await api.get(f"/holds/{hold_id}", headers=fan_a.headers)).json()["state"] == "active"


@pytest.mark.parametrize("tidied", [False, True], ids=["past-deadline", "tidied-by-the-sweeper"])
async def test_renewing_or_paying_for_an_expired_hold_answers_hold_expired(
    api: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent, fan_a: SignedIn, tidied: bool
) -> None:
    """One answer for an expired hold, whether or not the sweeper has marked it yet: the
    documented `hold-expired`, not a state conflict."""
    status, created = await hold(
        api, fan_a, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]}
    )
    assert status == 201
    hold_id = created["id"]
    await advance_clock(session, HoldPolicy().ttl.total_seconds() + 1)
    if tidied:
        await holds.sweep_expired(session)
        await session.commit()
    for path, body in ((f"/holds/{hold_id}/renew", None), (f"/holds/{hold_id}/checkout", CHECKOUT)):
        answer = await api.post(path, json=body, headers=fan_a.headers)
        assert answer.status_code == 409, answer.text
        assert problem_code(answer.json()) == "hold-expired"
