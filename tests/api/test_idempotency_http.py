"""The Idempotency-Key mechanism as the API applies it, over HTTP, against a route that
creates a hold (registered by the test; the mechanism is the app's own middleware)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar import Litestar, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.settings import Settings
from tests.factories import SmallEvent, make_event, make_fan, make_signed_in_fan, open_fan_session


class HoldRequest(msgspec.Struct):
    fan_id: uuid.UUID
    event_id: uuid.UUID
    seat_ids: list[int]


@post("/test/holds", opt={"idempotency_key": "required"}, status_code=201)
async def make_hold(data: JSONBody[HoldRequest], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    view = await holds.create_hold(
        db_session,
        owner=Owner(fan_id=data.fan_id),
        event_id=data.event_id,
        selection=SeatSelection(tuple(data.seat_ids)),
        policy=HoldPolicy(),
    )
    return {"id": str(view.id), "seats": [item.seat_id for item in view.items]}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(settings)
    app.register(make_hold)
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=1)


async def _holds(session: AsyncSession) -> int:
    await session.rollback()
    return int(await session.scalar(text("SELECT count(*) FROM holds")) or 0)


def _body(fan: uuid.UUID, event: SmallEvent, seats: list[int]) -> dict[str, Any]:
    return {"fan_id": str(fan), "event_id": str(event.event_id), "seat_ids": seats}


async def test_fifty_concurrent_posts_with_one_key_create_one_hold(
    client: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent
) -> None:
    fan = await make_fan(session)
    body = _body(fan, event, event.seat_ids[:2])
    headers = {"Idempotency-Key": "same-key", "Authorization": "Bearer fan-1"}
    responses = await asyncio.gather(
        *(client.post("/test/holds", json=body, headers=headers) for _ in range(50))
    )
    created = [r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    busy = [r for r in responses if r.status_code == 409]
    assert len(created) == 1
    assert len(created) + len(replayed) + len(busy) == 50
    assert all(r.json() == created[0].json() for r in replayed)
    assert all(r.json()["type"].endswith("/idempotency-key-in-progress") for r in busy)
    assert await _holds(session) == 1


async def test_replay_reuse_and_missing_key(
    client: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent
) -> None:
    fan = await make_fan(session)
    headers = {"Idempotency-Key": "k1", "Authorization": "Bearer fan-1"}
    first = await client.post("/test/holds", json=_body(fan, event, [event.seat_ids[0]]), headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/test/holds", json=_body(fan, event, [event.seat_ids[0]]), headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = await client.post("/test/holds", json=_body(fan, event, [event.seat_ids[1]]), headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["type"].endswith("/idempotency-key-reused")
    missing = await client.post("/test/holds", json=_body(fan, event, [event.seat_ids[2]]))
    assert missing.status_code == 400
    assert missing.json()["type"].endswith("/idempotency-key-required")
    assert await _holds(session) == 1


async def test_a_failed_request_is_replayed_and_changed_nothing(
    client: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent
) -> None:
    fan = await make_fan(session)
    headers = {"Idempotency-Key": "k-taken"}
    await client.post(
        "/test/holds", json=_body(fan, event, [event.seat_ids[0]]), headers={"Idempotency-Key": "a"}
    )
    body = _body(fan, event, [event.seat_ids[0], event.seat_ids[1]])
    failed = await client.post("/test/holds", json=body, headers=headers)
    assert failed.status_code == 409
    assert failed.json()["type"].endswith("/seats-taken")
    assert failed.json()["seat_ids"] == [event.seat_ids[0]]
    replay = await client.post("/test/holds", json=body, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == failed.json()
    assert await _holds(session) == 1
    held = await session.scalar(text("SELECT count(*) FROM inventory_units WHERE state = 'held'"))
    assert held == 1


async def test_keys_are_per_caller(
    client: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent
) -> None:
    fan = await make_fan(session)
    for n, token in enumerate(("Bearer a", "Bearer b")):
        response = await client.post(
            "/test/holds",
            json=_body(fan, event, [event.seat_ids[n]]),
            headers={"Idempotency-Key": "shared", "Authorization": token},
        )
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers


async def test_a_retry_after_signing_in_again_is_the_same_request(
    client: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent
) -> None:
    """Keys belong to the fan, not to the token: a client that lost its answer, signed in
    again and retried with the same key gets the first answer back, not a second hold."""
    fan, first_token = await make_signed_in_fan(session)
    second_token = await open_fan_session(session, fan)
    body = _body(fan, event, event.seat_ids[:2])
    first = await client.post(
        "/test/holds", json=body, headers={"Idempotency-Key": "k", "Authorization": f"Bearer {first_token}"}
    )
    retry = await client.post(
        "/test/holds", json=body, headers={"Idempotency-Key": "k", "Authorization": f"Bearer {second_token}"}
    )
    assert first.status_code == retry.status_code == 201
    assert retry.headers.get("idempotent-replayed") == "true"
    assert retry.json() == first.json()
    assert await _holds(session) == 1
    # Another fan's same key is theirs alone.
    other, other_token = await make_signed_in_fan(session)
    theirs = await client.post(
        "/test/holds",
        json=_body(other, event, event.seat_ids[2:3]),
        headers={"Idempotency-Key": "k", "Authorization": f"Bearer {other_token}"},
    )
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
