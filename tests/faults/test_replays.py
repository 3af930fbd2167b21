"""Replays over real HTTP: what a retrying world sends twice must land once.

Stripe delivers every webhook at least once, late and in any order; clients resend a request
whose answer they did not see, many at once. Each test serves the real API on loopback (the
in-process test client runs one request at a time, so it cannot race), sends the replays
concurrently, and then audits the database against the promises and against what the fans
were told: one hold per key, one order per paid hold, no payment or ticket twice, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.payments.webhooks import DEFAULT_TOLERANCE_S
from booking.settings import Settings
from tests.conftest import _conninfo
from tests.factories import SmallEvent, make_event, make_signed_in_fan
from tests.fakes.stripe import CARD_DECLINED, CARD_SUCCESS, FakeStripe, FakeWebhook
from tests.faults.audit import audit
from tests.live_api import live_api_with_stripe

FANS = 20
SEED = 20_240_611
CLIENTS = 50
MAX_WAIT_S = 1.0  # cap on an honoured Retry-After, to keep the file short
ATTEMPTS = 20  # sends of one request or webhook before the test gives up on it
CARD = "4242424242424242"  # the offline provider's card that pays

# What a payer does in the browser with the checkout's client secret.
PAYS = "pays"
DECLINED_THEN_PAYS = "declined, then pays"  # another card on the same page: the same intent
DECLINED = "declined"  # gives up and lets the seats go
AWAY = "away"  # never comes back to the page
PLANS = [PAYS] * 8 + [DECLINED_THEN_PAYS] * 6 + [DECLINED] * 3 + [AWAY] * 3


def _problem_code(response: httpx.Response) -> str:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return ""
    return str(response.json().get("type", "")).rsplit("/", 1)[-1]


async def _back_off(response: httpx.Response) -> None:
    await asyncio.sleep(min(float(response.headers.get("retry-after", "0.2")), MAX_WAIT_S))


async def _post(
    client: httpx.AsyncClient, path: str, body: Mapping[str, object], headers: Mapping[str, str]
) -> httpx.Response:
    """A careful client: a 503 (overloaded, busy) is sent again after its Retry-After, and
    so is a 409 saying the same key is still in progress."""
    for _ in range(ATTEMPTS):
        response = await client.post(path, json=body, headers=headers)
        if response.status_code == 503:
            assert "retry-after" in response.headers, response.text
        elif _problem_code(response) != "idempotency-key-in-progress":
            return response
        await _back_off(response)
    pytest.fail(f"POST {path} was still refused after {ATTEMPTS} attempts")


def _counts(database_url: str, event_id: uuid.UUID) -> dict[str, int]:
    """Rows of the event that a replay could duplicate."""
    sql = (
        "SELECT (SELECT count(*) FROM holds WHERE event_id = %(e)s),"
        " (SELECT count(*) FROM orders WHERE event_id = %(e)s),"
        " (SELECT count(*) FROM payments p JOIN holds h ON h.id = p.hold_id WHERE h.event_id = %(e)s),"
        " (SELECT count(*) FROM payments p JOIN holds h ON h.id = p.hold_id"
        "  WHERE h.event_id = %(e)s AND p.state = 'succeeded'),"
        " (SELECT count(*) FROM tickets t JOIN orders o ON o.id = t.order_id WHERE o.event_id = %(e)s),"
        " (SELECT count(*) FROM refunds r JOIN payments p ON p.id = r.payment_id"
        "  JOIN holds h ON h.id = p.hold_id WHERE h.event_id = %(e)s)"
    )
    with psycopg.connect(_conninfo(database_url), autocommit=True) as conn:
        row = conn.execute(sql, {"e": event_id}).fetchone()
    assert row is not None
    return dict(zip(("holds", "orders", "payments", "succeeded", "tickets", "refunds"), row, strict=True))


@dataclass
class StripeFan:
    token: str
    seats: list[int]
    plan: str
    hold_id: str = ""
    intent_id: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _hold_and_check_out(client: httpx.AsyncClient, fan: StripeFan, event: SmallEvent) -> None:
    held = await _post(
        client,
        "/holds",
        {"event_id": str(event.event_id), "seat_ids": fan.seats},
        {**fan.auth, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert held.status_code == 201, held.text
    fan.hold_id = str(held.json()["id"])
    paying = await _post(client, f"/holds/{fan.hold_id}/checkout", {"provider": "stripe"}, fan.auth)
    assert paying.status_code == 200, paying.text
    assert paying.json()["status"] == "pending", paying.text
    # Stripe's client secret is "<intent id>_secret_<random>": the browser confirms that intent.
    fan.intent_id = str(paying.json()["client_secret"]).split("_secret_")[0]


def _deliveries(hooks: list[FakeWebhook], rng: random.Random) -> list[FakeWebhook]:
    """Every event twice, in a shuffled order; a third of the copies arrive late, signed
    minutes ago (a slow delivery), yet inside the tolerance so they must be accepted."""
    late = int(time.time()) - (DEFAULT_TOLERANCE_S - 60)
    copies = [hook for hook in hooks for _ in range(2)]
    copies = [hook.resigned(late) if rng.random() < 1 / 3 else hook for hook in copies]
    rng.shuffle(copies)
    return copies


async def _deliver(client: httpx.AsyncClient, hook: FakeWebhook, answers: Counter[str]) -> httpx.Response:
    """One delivery as Stripe makes it: any answer other than 2xx is delivered again later.

    Two refusals are transient, and no other is allowed: 503 with Retry-After (documented:
    Stripe could not be asked, or the payment is not recorded yet), and 409
    idempotency-key-in-progress, the answer to a copy of an event that arrives while another
    copy of it is being handled (the event id is the key). Stripe delivers both again.
    """
    for _ in range(ATTEMPTS):
        response = await client.post("/webhooks/stripe", content=hook.payload, headers=hook.headers)
        answers[f"{response.status_code} {_problem_code(response)}".strip()] += 1
        if 200 <= response.status_code < 300:
            return response
        assert response.status_code in (409, 503), response.text
        if response.status_code == 503:
            assert "retry-after" in response.headers, response.text
        else:
            assert _problem_code(response) == "idempotency-key-in-progress", response.text
        await _back_off(response)
    pytest.fail(f"webhook {hook.event_id} was never acknowledged")


async def test_webhooks_twice_late_and_out_of_order_confirm_each_paid_hold_once(
    settings: Settings, session: AsyncSession, database_url: str
) -> None:
    rng = random.Random(SEED)
    event = await make_event(session, seats=2 * FANS, ga_capacity=1)
    plans = rng.sample(PLANS, len(PLANS))
    fans = []
    for n, plan in enumerate(plans):
        _, token = await make_signed_in_fan(session)
        # One or two seats each, so a ticket count per order is checked, not only per hold.
        seats = event.seat_ids[2 * n : 2 * n + 1 + n % 2]
        fans.append(StripeFan(token, seats, plan))
    fake = FakeStripe()
    async with (
        live_api_with_stripe(settings, fake) as live,
        httpx.AsyncClient(base_url=live.url, timeout=30, limits=httpx.Limits(max_connections=100)) as client,
    ):
        await asyncio.gather(*(_hold_and_check_out(client, fan, event) for fan in fans))

        # The payers in their browsers, before Stripe has told us anything.
        for fan in fans:
            if fan.plan in (DECLINED, DECLINED_THEN_PAYS):
                fake.confirm(fan.intent_id, card=CARD_DECLINED)
            if fan.plan in (PAYS, DECLINED_THEN_PAYS):
                fake.confirm(fan.intent_id, card=CARD_SUCCESS)
        hooks = fake.take_webhooks()
        assert Counter(h.type for h in hooks) == {
            "payment_intent.succeeded": 14,
            "payment_intent.payment_failed": 9,
        }

        answers: Counter[str] = Counter()
        copies = _deliveries(hooks, rng)
        assert 0 < sum(copy not in hooks for copy in copies) < len(copies)  # some arrive late
        delivered = await asyncio.gather(*(_deliver(client, copy, answers) for copy in copies))
        assert all(200 <= r.status_code < 300 for r in delivered), answers
        # Each event is handled once: every copy of it is answered with the same outcome.
        outcomes: dict[str, set[str]] = {}
        for response in delivered:
            outcomes.setdefault(response.json()["event"], set()).add(response.json()["outcome"])
        assert all(len(seen) == 1 for seen in outcomes.values()), outcomes
        assert len(outcomes) == len(hooks)

        # A declined payer who gives up lets the seats go, as the page offers.
        for fan in fans:
            if fan.plan == DECLINED:
                shown = await client.get(f"/holds/{fan.hold_id}", headers=fan.auth)
                assert shown.json()["state"] == "failed", shown.text
                released = await client.delete(f"/holds/{fan.hold_id}", headers=fan.auth)
                assert released.status_code == 200, released.text

        # What each fan sees now: the hold's state, and its order among the fan's orders.
        told: set[str] = set()
        expected_state = {
            PAYS: "confirmed",
            DECLINED_THEN_PAYS: "confirmed",
            DECLINED: "released",
            AWAY: "paying",
        }
        for fan in fans:
            shown = await client.get(f"/holds/{fan.hold_id}", headers=fan.auth)
            assert shown.status_code == 200, shown.text
            assert shown.json()["state"] == expected_state[fan.plan], (fan.plan, shown.text)
            listed = await client.get("/orders", headers=fan.auth)
            assert listed.status_code == 200, listed.text
            mine = [o for o in listed.json()["items"] if o["hold_id"] == fan.hold_id]
            assert len(mine) == (fan.plan in (PAYS, DECLINED_THEN_PAYS)), (fan.plan, mine)
            told.update(str(o["id"]) for o in mine if o["state"] == "confirmed")
            assert all(len(o["lines"]) == len(fan.seats) for o in mine)

    paid = [fan for fan in fans if fan.plan in (PAYS, DECLINED_THEN_PAYS)]
    assert _counts(database_url, event.event_id) == {
        "holds": FANS,
        "orders": len(paid),
        "payments": FANS,  # one per checkout: no webhook made another
        "succeeded": len(paid),
        "tickets": sum(len(fan.seats) for fan in paid),
        "refunds": 0,
    }
    assert len(fake.intents) == FANS
    assert audit(database_url, event.event_id, told_confirmed=told) == []


@contextlib.asynccontextmanager
async def _connected(url: str, n: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``n`` clients, each with one connection of its own, already open (a GET of /health
    each), so the requests that follow leave together rather than in order of connecting."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
            )
            for _ in range(n)
        ]
        await asyncio.gather(*(c.get("/health") for c in clients))
        yield clients


async def test_one_key_sent_by_fifty_clients_at_once_holds_once_and_one_checkout_pays_once(
    settings: Settings, session: AsyncSession, database_url: str
) -> None:
    event = await make_event(session, seats=4, ga_capacity=1)
    _, token = await make_signed_in_fan(session)
    auth = {"Authorization": f"Bearer {token}"}
    seats = event.seat_ids[:2]
    hold_body = {"event_id": str(event.event_id), "seat_ids": seats}
    key = uuid.uuid4().hex
    async with live_api_with_stripe(settings, FakeStripe()) as live, _connected(live.url, CLIENTS) as clients:
        held = await asyncio.gather(
            *(c.post("/holds", json=hold_body, headers={**auth, "Idempotency-Key": key}) for c in clients)
        )
        statuses = Counter(f"{r.status_code} {_problem_code(r)}".strip() for r in held)
        # Besides the hold and "in progress", the only other answer is the documented one of a
        # process whose pool stayed busy for its whole wait (fifty at once on ten connections):
        # 503 with Retry-After, which changed nothing.
        assert set(statuses) <= {"201", "409 idempotency-key-in-progress", "503 overloaded"}, statuses
        assert all("retry-after" in r.headers for r in held if r.status_code == 503)
        first = [r for r in held if r.status_code == 201 and "idempotent-replayed" not in r.headers]
        replayed = [
            r for r in held if r.status_code == 201 and r.headers.get("idempotent-replayed") == "true"
        ]
        assert len(first) == 1, statuses
        assert len(first) + len(replayed) == statuses["201"]
        assert all(r.content == first[0].content for r in replayed)
        hold_id = str(first[0].json()["id"])
        # Every client told to come back sends again and gets the same hold, as a replay.
        again = await asyncio.gather(
            *(
                _post(c, "/holds", hold_body, {**auth, "Idempotency-Key": key})
                for c, r in zip(clients, held, strict=True)
                if r.status_code != 201
            )
        )
        assert all(r.status_code == 201 for r in again), [r.text for r in again]
        assert all(r.headers.get("idempotent-replayed") == "true" for r in again)
        assert all(r.content == first[0].content for r in again)
        assert _counts(database_url, event.event_id)["holds"] == 1

        # Checkout is idempotent by the hold (the route takes no Idempotency-Key): the hold is
        # the key, so fifty checkouts of it at once pay once.
        paid = await asyncio.gather(
            *(
                _post(c, f"/holds/{hold_id}/checkout", {"provider": "offline", "card_number": CARD}, auth)
                for c in clients
            )
        )
        checkout_statuses = Counter(
            f"{r.status_code} {r.json().get('status', _problem_code(r))}" for r in paid
        )
        # A checkout that finds the payment another one started continues it: it may answer
        # before that one has confirmed (pending), but never fails or refuses.
        assert set(checkout_statuses) <= {"200 confirmed", "200 pending"}, checkout_statuses
        confirmed = {str(r.json()["order_id"]) for r in paid if r.json()["status"] == "confirmed"}
        assert len(confirmed) == 1, checkout_statuses
        payment_ids = {r.json()["payment_id"] for r in paid}
        assert len(payment_ids) == 1, payment_ids

    counts = _counts(database_url, event.event_id)
    assert counts == {"holds": 1, "orders": 1, "payments": 1, "succeeded": 1, "tickets": 2, "refunds": 0}
    assert audit(database_url, event.event_id, told_confirmed=confirmed) == []

    # The checks above would see a duplicate (the schema refuses a second order or live
    # payment for one hold, so a replay that ran twice would show as a second hold): one
    # planted on purpose, with an order of its own, is counted, and audited as an order no
    # fan was told of, without its tickets.
    with psycopg.connect(_conninfo(database_url), autocommit=True) as conn:
        twin = conn.execute(
            "INSERT INTO holds (event_id, fan_id, state, quantity, total_minor, currency, expires_at)"
            " SELECT event_id, fan_id, 'confirmed', quantity, total_minor, currency, expires_at"
            " FROM holds WHERE id = %s RETURNING id",
            (hold_id,),
        ).fetchone()
        assert twin is not None
        conn.execute(
            "INSERT INTO orders (hold_id, event_id, fan_id, channel, state, total_minor, currency)"
            " SELECT %s, event_id, fan_id, channel, state, total_minor, currency FROM orders WHERE hold_id = %s",
            (twin[0], hold_id),
        )
    broken = audit(database_url, event.event_id, told_confirmed=confirmed)
    assert [b.split(" (")[0].split(":")[0] for b in broken] == [
        "confirmed orders without all their items or tickets",
        "fans were told of 1 orders, the database confirmed 2",
    ], broken
    planted = _counts(database_url, event.event_id)
    assert (planted["holds"], planted["orders"]) == (2, 2)
