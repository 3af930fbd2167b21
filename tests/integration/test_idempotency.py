"""Promise 5: a retried request has one effect. Stripe's semantics, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking import idempotency
from booking.db import make_async_engine, make_sessionmaker
from booking.errors import BookingError, IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRequest
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.idempotency import StoredResponse, run_once
from tests.factories import SmallEvent, make_event, make_fan


def render(error: BookingError) -> StoredResponse:
    return StoredResponse(error.status, json.dumps({"type": error.code}).encode())


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=5)


def hold_seats(owner: Owner, event: SmallEvent, seats: tuple[int, ...]):  # type: ignore[no-untyped-def]
    async def operation(session: AsyncSession) -> StoredResponse:
        view = await holds.create_hold(
            session, owner=owner, event_id=event.event_id, selection=SeatSelection(seats), policy=HoldPolicy()
        )
        return StoredResponse(
            201, json.dumps({"id": str(view.id)}).encode(), {"location": f"/holds/{view.id}"}
        )

    return operation


async def _count(session: AsyncSession, table: str) -> int:
    return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


async def test_fifty_concurrent_requests_with_one_key_create_one_hold(
    database_url: str, event: SmallEvent
) -> None:
    engine = make_async_engine(database_url, pool_size=60, max_overflow=0)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:
            owner = Owner(fan_id=await make_fan(session))
        body = json.dumps({"seat_ids": event.seat_ids[:2]}).encode()

        async def request() -> str:
            try:
                outcome = await run_once(
                    sessions,
                    scope=f"fan:{owner.fan_id}",
                    key="checkout-1",
                    method="POST",
                    path="/holds",
                    body=body,
                    operation=hold_seats(owner, event, tuple(event.seat_ids[:2])),
                    render_error=render,
                )
            except IdempotencyKeyInProgress:
                return "409"
            return "replayed" if outcome.replayed else "created"

        results = await asyncio.gather(*(request() for _ in range(50)))
        assert results.count("created") == 1
        assert set(results) <= {"created", "replayed", "409"}
        async with sessions() as session:
            assert await _count(session, "holds") == 1
            assert await _count(session, "idempotency_keys") == 1
    finally:
        await engine.dispose()


async def test_replay_returns_the_stored_response_and_reuse_with_another_body_is_refused(
    engine: AsyncEngine, event: SmallEvent
) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        owner = Owner(fan_id=await make_fan(session))
    scope = f"fan:{owner.fan_id}"
    call = dict(scope=scope, key="k-1", method="POST", path="/holds", render_error=render)
    first = await run_once(
        sessions, body=b"a", operation=hold_seats(owner, event, (event.seat_ids[0],)), **call
    )
    again = await run_once(
        sessions, body=b"a", operation=hold_seats(owner, event, (event.seat_ids[0],)), **call
    )
    assert not first.replayed
    assert again.replayed
    assert again.response == first.response
    with pytest.raises(IdempotencyKeyReused):
        await run_once(sessions, body=b"b", operation=hold_seats(owner, event, (event.seat_ids[1],)), **call)
    # Keys are per caller: another fan's identical key is a different request.
    other = Owner(fan_id=await make_fan(session))
    theirs = await run_once(
        sessions,
        scope=f"fan:{other.fan_id}",
        key="k-1",
        method="POST",
        path="/holds",
        body=b"a",
        operation=hold_seats(other, event, (event.seat_ids[2],)),
        render_error=render,
    )
    assert not theirs.replayed
    async with sessions() as session:
        assert await _count(session, "holds") == 2


async def test_a_domain_error_is_stored_and_replayed_with_nothing_changed(
    engine: AsyncEngine, event: SmallEvent
) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        owner = Owner(fan_id=await make_fan(session))
    call = dict(scope="s", key="k-err", method="POST", path="/holds", body=b"x", render_error=render)
    operation = hold_seats(owner, event, (event.seat_ids[0], 999_999))
    first = await run_once(sessions, operation=operation, **call)
    assert first.response.status == 400
    assert json.loads(first.response.body) == {"type": "unknown-seats"}
    again = await run_once(sessions, operation=operation, **call)
    assert again.replayed
    async with sessions() as session:
        assert await _count(session, "holds") == 0


async def test_a_crash_frees_the_key_and_rolls_the_work_back(engine: AsyncEngine, event: SmallEvent) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        owner = Owner(fan_id=await make_fan(session))

    async def crashing(session: AsyncSession) -> StoredResponse:
        await hold_seats(owner, event, (event.seat_ids[0],))(session)
        raise RuntimeError("the process died here")

    call = dict(scope="s", key="k-crash", method="POST", path="/holds", body=b"x", render_error=render)
    with pytest.raises(RuntimeError):
        await run_once(sessions, operation=crashing, **call)
    retried = await run_once(sessions, operation=hold_seats(owner, event, (event.seat_ids[0],)), **call)
    assert not retried.replayed
    assert retried.response.status == 201
    async with sessions() as session:
        assert await _count(session, "holds") == 1


async def test_a_duplicate_during_the_first_request_answers_409_at_once_and_nothing_runs_twice(
    engine: AsyncEngine, event: SmallEvent
) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        owner = Owner(fan_id=await make_fan(session))
    first_running = asyncio.Event()
    finish = asyncio.Event()
    runs = 0

    async def slow(session: AsyncSession) -> StoredResponse:
        nonlocal runs
        runs += 1
        response = await hold_seats(owner, event, (event.seat_ids[0],))(session)
        first_running.set()
        await finish.wait()
        return response

    call = dict(scope="s", key="k-slow", method="POST", path="/holds", body=b"x", render_error=render)
    first = asyncio.create_task(run_once(sessions, operation=slow, **call))
    await first_running.wait()
    # Answered without waiting for the first request, which is still running.
    with pytest.raises(IdempotencyKeyInProgress):
        await asyncio.wait_for(run_once(sessions, operation=slow, **call), timeout=30)
    assert not first.done()
    finish.set()
    done = await first
    again = await run_once(sessions, operation=slow, **call)
    assert runs == 1
    assert not done.replayed
    assert again.replayed
    assert again.response == done.response


async def test_a_server_error_leaves_no_key_and_no_work(engine: AsyncEngine, event: SmallEvent) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        owner = Owner(fan_id=await make_fan(session))

    async def failing(session: AsyncSession) -> StoredResponse:
        await hold_seats(owner, event, (event.seat_ids[0],))(session)
        return StoredResponse(503, b"busy")

    call = dict(scope="s", key="k-503", method="POST", path="/holds", body=b"x", render_error=render)
    assert (await run_once(sessions, operation=failing, **call)).response.status == 503
    async with sessions() as session:
        assert await _count(session, "idempotency_keys") == 0
        assert await _count(session, "holds") == 0
    assert (
        await run_once(sessions, operation=hold_seats(owner, event, (event.seat_ids[0],)), **call)
    ).response.status == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "naïve"])
async def test_malformed_keys_are_refused(engine: AsyncEngine, key: str) -> None:
    async def never(session: AsyncSession) -> StoredResponse:
        raise AssertionError("must not run")

    with pytest.raises(InvalidRequest):
        await run_once(
            make_sessionmaker(engine),
            scope="s",
            key=key,
            method="POST",
            path="/x",
            body=b"",
            operation=never,
            render_error=render,
        )


async def test_keys_are_kept_24_hours_then_pruned_and_reusable(
    engine: AsyncEngine, event: SmallEvent
) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        owner = Owner(fan_id=await make_fan(session))
    call = dict(scope="s", key="k-old", method="POST", path="/holds", body=b"x", render_error=render)
    await run_once(sessions, operation=hold_seats(owner, event, (event.seat_ids[0],)), **call)
    async with sessions() as session:
        assert await idempotency.prune(session) == 0
        await session.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"))
        await session.commit()
    # Expired but not yet pruned: the key works as new.
    fresh = await run_once(sessions, operation=hold_seats(owner, event, (event.seat_ids[1],)), **call)
    assert not fresh.replayed
    async with sessions() as session:
        await session.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"))
        await session.commit()
        assert await idempotency.prune(session) == 1
        assert await _count(session, "idempotency_keys") == 0
