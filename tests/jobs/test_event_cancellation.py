"""Cancelling an event: every paid order refunded through the payment provider exactly once,
however often the cancellation job or the relay runs; each fan emailed once; a payment that
lands after the cancel refunded too; the refunds table's own guard against a second refund."""

from __future__ import annotations

import email
import importlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.catalog import admin
from booking.db import make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner
from booking.payments import offline
from booking.payments import service as payments
from booking.payments.offline import OfflineGateway
from booking.payments.stripe_gateway import StripeGateway
from booking.settings import get_settings
from jobs.catalog import refund_cancelled_event, refund_cancelled_events
from jobs.outbox import relay_outbox
from tests.catalog_data import Arena, make_arena, new_event
from tests.factories import make_fan, pay_with_card
from tests.fakes.stripe import CARD_SUCCESS, FakeStripe

pytestmark = pytest.mark.usefixtures("job_env")
POLICY = HoldPolicy()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def mail_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    return tmp_path / "mail"


async def _event(session: AsyncSession) -> tuple[uuid.UUID, uuid.UUID]:
    """An event on sale with 20 standing places; its id and the standing tier's."""
    hall: Arena = await make_arena(session, sections=2, rows=1, seats_per_row=2, standing=20)
    event_id = await admin.create_event(session, new_event(hall), limits=POLICY)
    await admin.put_on_sale(session, event_id)
    await session.commit()
    view = await admin.get_event(session, event_id)
    await session.rollback()
    return event_id, next(t.id for t in view.tiers if t.kind == "ga")


async def _hold(
    session: AsyncSession, event_id: uuid.UUID, tier_id: uuid.UUID, quantity: int = 2
) -> tuple[Owner, uuid.UUID]:
    owner = Owner(fan_id=await make_fan(session))
    view = await holds.create_hold(
        session, owner=owner, event_id=event_id, selection=GASelection(tier_id, quantity), policy=POLICY
    )
    await session.commit()
    return owner, view.id


async def _scalar(session: AsyncSession, sql: str, **params: Any) -> Any:
    value = await session.scalar(text(sql), params)
    await session.rollback()
    return value


async def _queued(redis_url: str, func: str) -> list[tuple[Any, ...]]:
    redis = Redis.from_url(redis_url)
    try:
        return [tuple(job.args) for job in Queue("default", connection=redis).jobs if job.func_name == func]
    finally:
        redis.close()


async def _run(redis_url: str, func: str) -> list[Any]:
    module, _, name = func.rpartition(".")
    job = getattr(importlib.import_module(module), name)
    return [await job(*args) for args in await _queued(redis_url, func)]


async def test_cancelling_refunds_every_paid_order_once_even_when_the_job_and_the_relay_run_twice(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis_url: str, mail_dir: Path
) -> None:
    event_id, tier_id = await _event(session)
    gateway = OfflineGateway(sessions)
    orders = []
    for _ in range(3):
        owner, hold_id = await _hold(session, event_id, tier_id)
        settled = await pay_with_card(sessions, gateway, owner, hold_id, offline.SUCCESS)
        orders.append(settled.order_id)
    _, unpaid = await _hold(session, event_id, tier_id, 1)
    payer, paying = await _hold(session, event_id, tier_id, 1)
    late = await pay_with_card(sessions, gateway, payer, paying, offline.LATE_SUCCESS)
    assert late.result == payments.Result.PENDING

    preview = await admin.get_event(session, event_id)
    await session.rollback()
    assert (preview.paid_orders, preview.payments_in_flight) == (3, 1)
    cancelled = await admin.cancel_event(session, event_id)
    await session.commit()
    assert (cancelled.orders_to_refund, cancelled.holds_released, cancelled.payments_in_flight) == (3, 1, 1)
    assert await _scalar(session, "SELECT state FROM holds WHERE id = :h", h=unpaid) == "released"

    # The relay queues the cancellation job once, however often it relays.
    await relay_outbox()
    await relay_outbox()
    assert await _queued(redis_url, "jobs.catalog.refund_cancelled_event") == [(str(event_id),)]
    # The job, run twice (RQ delivers at least once), and the periodic sweep beside it.
    (first,) = await _run(redis_url, "jobs.catalog.refund_cancelled_event")
    second = await refund_cancelled_event(str(event_id))
    assert first == {"orders": 3, "refunds_paid": 3}
    assert second == {"orders": 0, "refunds_paid": 0}
    assert await refund_cancelled_events() == {"events": 0, "orders": 0, "refunds_paid": 0}

    refunds = (
        await session.execute(
            text(
                "SELECT p.order_id, r.state, r.amount_minor = p.amount_minor FROM refunds r"
                " JOIN payments p ON p.id = r.payment_id ORDER BY p.order_id"
            )
        )
    ).all()
    await session.rollback()
    assert sorted(str(row[0]) for row in refunds) == sorted(str(o) for o in orders)
    assert {(row[1], row[2]) for row in refunds} == {("succeeded", True)}
    assert await _scalar(session, "SELECT count(*) FROM orders WHERE state = 'confirmed'") == 0
    assert await _scalar(session, "SELECT count(*) FROM tickets WHERE state = 'valid'") == 0
    # Only the hold being paid for still has places.
    assert (
        await _scalar(
            session,
            "SELECT count(*) FROM inventory_units WHERE event_id = :e AND state <> 'available'",
            e=event_id,
        )
        == 1
    )

    # Each fan is told once: one notice per order, however often the relay and the job run.
    await relay_outbox()
    await relay_outbox()
    assert await _run(redis_url, "jobs.mail.send_cancellation_notices") == [3]
    await _run(redis_url, "jobs.mail.send_cancellation_notices")
    notices = sorted(mail_dir.glob("*.eml"))  # noqa: ASYNC240 (a test's own folder)
    assert len(notices) == 3
    message = email.message_from_bytes(notices[0].read_bytes())
    assert message["Subject"] == "Cancelled: Aurora Lights: Arena Tour"
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "has been cancelled" in body
    assert "refunded in full, 70.00 GBP" in body

    # The payment in flight succeeds after all: its order is refunded by the sweep.
    async with sessions() as s:
        ref = await s.scalar(text("SELECT provider_ref FROM payments WHERE id = :p"), {"p": late.payment_id})
        answer = await gateway.retrieve(str(ref), hold_overdue=True)
        settled = await payments.settle(s, late.payment_id, answer)
        await s.commit()
    assert settled.order_id is not None
    assert await refund_cancelled_events() == {"events": 1, "orders": 1, "refunds_paid": 1}
    assert await _scalar(session, "SELECT count(*) FROM refunds") == 4
    assert await _scalar(session, "SELECT count(*) FROM orders WHERE state = 'confirmed'") == 0


async def test_through_stripe_each_order_is_refunded_once_however_often_the_refund_is_made(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake = FakeStripe()
    stripe = StripeGateway(fake.api_key, http_client=fake.http_client)
    event_id, tier_id = await _event(session)
    orders = []
    for _ in range(2):
        owner, hold_id = await _hold(session, event_id, tier_id)
        started = await payments.checkout(
            sessions, gateway=stripe, owner=owner, hold_id=hold_id, method={}, policy=POLICY
        )
        ref = str(
            await _scalar(session, "SELECT provider_ref FROM payments WHERE id = :p", p=started.payment_id)
        )
        fake.confirm(ref, card=CARD_SUCCESS)
        async with sessions() as s:
            paid = await payments.settle(
                s, started.payment_id, await stripe.retrieve(ref, hold_overdue=False)
            )
            await s.commit()
        orders.append(paid.order_id)
    await admin.cancel_event(session, event_id)
    await session.commit()
    for _ in range(2):  # the cancellation job twice
        async with sessions() as s:
            await admin.refund_cancelled_orders(s, event_id)
            await s.commit()
    async with sessions() as s:
        due = await payments.pending_refunds(s)
    assert len(due) == 2
    # Paid back, then the same refunds made again, as a job retried after a crash would.
    for item in due + due:
        await payments.make_refund(sessions, stripe, item)
    assert len(fake.refunds) == 2
    assert sorted(r["payment_intent"] for r in fake.refunds.values()) == sorted(
        {r["payment_intent"] for r in fake.refunds.values()}
    )
    assert await _scalar(session, "SELECT count(*) FROM refunds WHERE state = 'succeeded'") == 2


async def test_the_refunds_table_takes_one_refund_per_order(session: AsyncSession) -> None:
    event_id, tier_id = await _event(session)
    sessions = make_sessionmaker(session.bind)  # type: ignore[arg-type]
    owner, hold_id = await _hold(session, event_id, tier_id)
    settled = await pay_with_card(sessions, OfflineGateway(sessions), owner, hold_id, offline.SUCCESS)
    assert settled.order_id is not None
    await admin.cancel_event(session, event_id)
    await admin.refund_cancelled_orders(session, event_id)
    # Recording it again (a staff refund racing the job) adds nothing.
    await payments.request_order_refund(session, settled.order_id)
    await session.commit()
    assert await _scalar(session, "SELECT count(*) FROM refunds") == 1
    # Negative control: without the guard's ON CONFLICT, the table itself refuses a second one.
    with pytest.raises(IntegrityError, match="uq_refunds_payment_id"):
        await session.execute(
            text(
                "INSERT INTO refunds (payment_id, idempotency_key, amount_minor, currency)"
                " SELECT payment_id, idempotency_key, amount_minor, currency FROM refunds"
            )
        )
