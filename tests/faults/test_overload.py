"""Overload is answered, not queued: a slow payment provider holds no database connection, an
exhausted pool and a full process answer 503 with Retry-After at once, and an order confirmed
while its buyer's connection was gone is what a retried checkout returns."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.settings import Settings
from tests.conftest import _conninfo
from tests.factories import SmallEvent, make_event, make_signed_in_fan
from tests.fakes.stripe import FakeStripe
from tests.live_api import LiveApi, live_api_with_stripe

FANS = 40


@pytest.fixture
def slow_stripe() -> FakeStripe:
    fake = FakeStripe()
    fake.latency_s = 2.0
    return fake


@contextlib.asynccontextmanager
async def _served(settings: Settings, fake: FakeStripe) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a real API on loopback whose Stripe is ``fake``."""
    async with (
        live_api_with_stripe(settings, fake) as live,
        httpx.AsyncClient(base_url=live.url, timeout=60, limits=httpx.Limits(max_connections=100)) as client,
    ):
        yield client


async def _hold(client: httpx.AsyncClient, token: str, event: SmallEvent, seat: int) -> str:
    held = await client.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": [seat]},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert held.status_code == 201, held.text
    return str(held.json()["id"])


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=FANS, ga_capacity=2)


async def test_a_slow_provider_holds_no_connection_and_no_checkout_answers_500(
    settings: Settings, session: AsyncSession, event: SmallEvent, slow_stripe: FakeStripe, database_url: str
) -> None:
    fans = [await make_signed_in_fan(session) for _ in range(FANS)]
    small_pool = settings.model_copy(update={"db_pool_size": 5})
    async with _served(small_pool, slow_stripe) as client:
        holds = [
            await _hold(client, token, event, seat)
            for (_, token), seat in zip(fans, event.seat_ids, strict=False)
        ]

        async def checkout(token: str, hold_id: str) -> httpx.Response:
            return await client.post(
                f"/holds/{hold_id}/checkout",
                json={"provider": "stripe"},
                headers={"Authorization": f"Bearer {token}"},
            )

        idle_in_transaction = []

        async def watch(until: asyncio.Task[list[httpx.Response]]) -> None:
            # Activity statistics are a snapshot per transaction: autocommit sees them fresh.
            async with await psycopg.AsyncConnection.connect(
                _conninfo(database_url), autocommit=True
            ) as conn:
                while not until.done():
                    row = await (
                        await conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND state LIKE 'idle in transaction%%'"
                            # Between two statements of one short transaction a session is
                            # idle for a moment while the event loop serves others; one kept
                            # across the 2 s provider call stays idle that long.
                            " AND now() - state_change > interval '1 second'"
                        )
                    ).fetchone()
                    idle_in_transaction.append(row[0] if row else 0)
                    await asyncio.sleep(0.05)

        everyone = asyncio.gather(*(checkout(token, h) for (_, token), h in zip(fans, holds, strict=True)))
        task: asyncio.Task[list[httpx.Response]] = asyncio.ensure_future(everyone)
        await watch(task)
        answers = await task
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert all("Retry-After" in a.headers for a in answers if a.status_code == 503)
    assert statuses.count(200) > 0
    # The provider took 2 s per call; the samples span those seconds.
    assert len(idle_in_transaction) > 10
    assert max(idle_in_transaction) == 0, idle_in_transaction
    paid = [a.json() for a in answers if a.status_code == 200]
    assert all(p["status"] == "pending" and p["client_secret"] for p in paid)


async def test_an_exhausted_pool_answers_503_with_retry_after_within_the_wait(
    settings: Settings, session: AsyncSession, event: SmallEvent, database_url: str
) -> None:
    _, token = await make_signed_in_fan(session)
    tight = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_seconds": 0.3})
    async with _served(tight, FakeStripe()) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/me", headers=headers)).status_code == 200
        # The pool's only connection is taken on purpose: a hold that waits on a seat's row
        # lock, held from outside, keeps it for up to the lock timeout.
        blocker = await psycopg.AsyncConnection.connect(_conninfo(database_url))
        await blocker.execute(
            "SELECT 1 FROM inventory_units WHERE seat_id = %s FOR UPDATE", (event.seat_ids[0],)
        )

        def hold(seat: int) -> Awaitable[httpx.Response]:
            return client.post(
                "/holds",
                json={"event_id": str(event.event_id), "seat_ids": [seat]},
                headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            )

        stuck = asyncio.ensure_future(hold(event.seat_ids[0]))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        answer = await hold(event.seat_ids[1])
        waited = time.monotonic() - started
        await blocker.rollback()
        await blocker.close()
        assert (await stuck).status_code == 201
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["type"].endswith("/overloaded")
        # The configured wait, not the 30 s default: a generous bound that only a queued
        # request would break.
        assert waited < 5
        # With the connection back, the same request succeeds: the refused one left nothing.
        assert (await hold(event.seat_ids[1])).status_code == 201
    assert await session.scalar(text("SELECT count(*) FROM holds")) == 2


async def test_requests_past_the_in_flight_bound_are_refused_at_once(
    settings: Settings, session: AsyncSession, event: SmallEvent, slow_stripe: FakeStripe
) -> None:
    fans = [await make_signed_in_fan(session) for _ in range(3)]
    bounded = settings.model_copy(update={"max_in_flight": 2})  # checkouts may use both
    async with _served(bounded, slow_stripe) as client:
        holds = [
            await _hold(client, token, event, seat)
            for (_, token), seat in zip(fans, event.seat_ids, strict=False)
        ]
        answers = await asyncio.gather(
            *(
                client.post(
                    f"/holds/{hold_id}/checkout",
                    json={"provider": "stripe"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                for (_, token), hold_id in zip(fans, holds, strict=True)
            )
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 200, 503]
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["type"].endswith("/overloaded")
        # The probes are never refused.
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
        # The refused fan retries as told and is served.
        (_, token), hold_id = next(
            (fan, h) for fan, h, a in zip(fans, holds, answers, strict=True) if a.status_code == 503
        )
        retried = await client.post(
            f"/holds/{hold_id}/checkout",
            json={"provider": "stripe"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert retried.status_code == 200, retried.text


def _send_and_hang_up(port: int, path: str, token: str, body: bytes) -> None:
    """A fan whose connection drops right after sending: the answer is never read."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        sock.sendall(request)
        sock.shutdown(socket.SHUT_RDWR)


async def test_an_order_confirmed_while_the_buyer_was_gone_is_what_a_retry_returns(
    settings: Settings, session: AsyncSession, event: SmallEvent
) -> None:
    _, token = await make_signed_in_fan(session)
    live = LiveApi(settings)
    live.start()
    try:
        async with httpx.AsyncClient(base_url=live.url) as client:
            hold_id = await _hold(client, token, event, event.seat_ids[0])
            body = b'{"provider": "offline", "card_number": "4242424242424242"}'
            await asyncio.to_thread(_send_and_hang_up, live.port, f"/holds/{hold_id}/checkout", token, body)
            # The server goes on without the fan: wait until the order exists.
            for _ in range(200):
                await session.rollback()
                if await session.scalar(
                    text("SELECT count(*) FROM orders WHERE hold_id = :h"), {"h": hold_id}
                ):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the checkout never completed without its client")
            retried = await client.post(
                f"/holds/{hold_id}/checkout",
                json={"provider": "offline", "card_number": "4242424242424242"},
                headers={"Authorization": f"Bearer {token}"},
            )
    finally:
        live.stop()
    assert retried.status_code == 200, retried.text
    answer = retried.json()
    order_id = await session.scalar(text("SELECT id FROM orders WHERE hold_id = :h"), {"h": hold_id})
    assert answer["status"] == "confirmed"
    assert answer["order_id"] == str(order_id)
    # One order, one payment, one ticket: the retry paid nothing twice.
    counts = (
        await session.execute(
            text(
                "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM payments),"
                " (SELECT count(*) FROM tickets)"
            )
        )
    ).one()
    assert tuple(counts) == (1, 1, 1)


async def test_under_overload_a_paying_fan_is_served_before_a_new_hold(
    settings: Settings, session: AsyncSession, event: SmallEvent, slow_stripe: FakeStripe
) -> None:
    fans = [await make_signed_in_fan(session) for _ in range(5)]
    bounded = settings.model_copy(update={"max_in_flight": 4})  # new work may use three
    async with _served(bounded, slow_stripe) as client:
        holds = [
            await _hold(client, token, event, seat)
            for (_, token), seat in zip(fans[:4], event.seat_ids, strict=False)
        ]

        def checkout(n: int) -> Awaitable[httpx.Response]:
            return client.post(
                f"/holds/{holds[n]}/checkout",
                json={"provider": "stripe"},
                headers={"Authorization": f"Bearer {fans[n][1]}"},
            )

        busy = [asyncio.ensure_future(checkout(n)) for n in range(3)]
        await asyncio.sleep(0.5)  # three checkouts wait on the 2 s provider
        new_hold = await client.post(
            "/holds",
            json={"event_id": str(event.event_id), "seat_ids": [event.seat_ids[4]]},
            headers={"Authorization": f"Bearer {fans[4][1]}", "Idempotency-Key": uuid.uuid4().hex},
        )
        paying = await checkout(3)
        assert [b.status_code for b in await asyncio.gather(*busy)] == [200, 200, 200]
    assert new_hold.status_code == 503, new_hold.text
    assert new_hold.headers["Retry-After"] == "1"
    assert paying.status_code == 200, paying.text
