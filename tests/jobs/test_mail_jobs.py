"""The fans' emails: a real SMTP server on loopback (aiosmtpd), and the .eml folder."""

from __future__ import annotations

import asyncio
import email
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from redis import Redis
from rq import Queue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.keys import load_signing_keys
from booking.orders.service import confirm_hold
from booking.settings import get_settings
from booking.tickets.links import order_link_key
from jobs.mail import send_order_confirmation, send_refund_notice
from jobs.outbox import relay_outbox
from tests.conftest import free_port
from tests.factories import SmallEvent, advance_clock, make_event, make_fan

pytestmark = pytest.mark.usefixtures("job_env")


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("BOXOFFICE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BOXOFFICE_SMTP_PORT", str(port))
    monkeypatch.setenv("BOXOFFICE_SMTP_STARTTLS", "false")
    get_settings.cache_clear()
    yield handler
    controller.stop()
    get_settings.cache_clear()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    return tmp_path


async def _order(session: AsyncSession, seats: int = 2) -> tuple[SmallEvent, uuid.UUID, uuid.UUID]:
    event = await make_event(session, seats=4, ga_capacity=1)
    fan = await make_fan(session, email="ann@example.org")
    view = await holds.create_hold(
        session,
        owner=Owner(fan_id=fan),
        event_id=event.event_id,
        selection=SeatSelection(tuple(event.seat_ids[:seats])),
        policy=HoldPolicy(),
    )
    confirmation = await confirm_hold(session, hold_id=view.id)
    await session.commit()
    assert confirmation.order_id is not None
    return event, view.id, confirmation.order_id


async def _fact(session: AsyncSession, topic: str) -> str:
    return str(await session.scalar(text("SELECT event_id FROM outbox WHERE topic = :t"), {"t": topic}))


async def test_the_confirmation_arrives_over_smtp_with_the_seats_and_the_tickets_link(
    session: AsyncSession, inbox: Inbox, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXOFFICE_PUBLIC_URL", "https://tickets.example.org/")
    get_settings.cache_clear()
    _, _, order_id = await _order(session)
    where = await send_order_confirmation(str(order_id), await _fact(session, "order.confirmed"))
    assert where == "smtp:127.0.0.1"
    (message,) = inbox.messages
    assert message["To"] == "ann@example.org"
    assert "Your tickets for" in message["Subject"]
    # No attachments: the PDF is drawn when the link is opened, from the tickets as they are.
    assert not message.is_multipart()
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    key = order_link_key(load_signing_keys(get_settings()).token_secret, order_id)
    assert f"https://tickets.example.org/orders/{order_id}/tickets.pdf?key={key}" in body
    assert body.count("(ticket ") == 2
    assert "Row A, Seat 1" in body
    assert "Row A, Seat 2" in body


async def test_a_confirmation_of_an_order_with_no_valid_ticket_is_not_sent(
    session: AsyncSession, inbox: Inbox, data_dir: Path
) -> None:
    _, _, order_id = await _order(session, seats=1)
    await session.execute(
        text("UPDATE tickets SET state = 'revoked', revoked_at = now() WHERE order_id = :o"), {"o": order_id}
    )
    await session.commit()
    assert await send_order_confirmation(str(order_id), await _fact(session, "order.confirmed")) is None
    assert inbox.messages == []


async def test_the_confirmation_gives_the_start_in_the_events_own_timezone(
    session: AsyncSession, inbox: Inbox, data_dir: Path
) -> None:
    event, _, order_id = await _order(session, seats=1)
    await session.execute(
        text(
            "UPDATE events SET timezone = 'Asia/Tokyo', starts_at = '2027-03-01 10:00+00', "
            "ends_at = '2027-03-01 13:00+00' WHERE id = :id"
        ),
        {"id": event.event_id},
    )
    await session.commit()
    await send_order_confirmation(str(order_id), await _fact(session, "order.confirmed"))
    (message,) = inbox.messages
    body = next(part for part in message.walk() if part.get_content_type() == "text/plain")
    text_body = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Monday 01 March 2027, 19:00 JST, Asia/Tokyo" in text_body


async def test_without_smtp_the_message_is_one_eml_file_however_often_sent(
    session: AsyncSession, data_dir: Path
) -> None:
    _, _, order_id = await _order(session, seats=1)
    fact = await _fact(session, "order.confirmed")
    first = await send_order_confirmation(str(order_id), fact)
    second = await send_order_confirmation(str(order_id), fact)
    assert first == second
    files = list((data_dir / "mail").glob("*.eml"))
    assert len(files) == 1
    assert b"ann@example.org" in files[0].read_bytes()


async def test_a_late_payment_refund_tells_the_fan_why(
    session: AsyncSession, data_dir: Path, redis_url: str
) -> None:
    event = await make_event(session, seats=2, ga_capacity=1)
    fan = await make_fan(session, email="late@example.org")
    view = await holds.create_hold(
        session,
        owner=Owner(fan_id=fan),
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[0],)),
        policy=HoldPolicy(),
    )
    await session.commit()
    await advance_clock(session, 3600)
    rival = await make_fan(session)
    await holds.create_hold(
        session,
        owner=Owner(fan_id=rival),
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[0],)),
        policy=HoldPolicy(),
    )
    await confirm_hold(session, hold_id=view.id)
    await session.commit()
    relayed = await relay_outbox()
    errors = (await session.scalars(text("SELECT last_error FROM outbox WHERE last_error IS NOT NULL"))).all()
    assert relayed["failed"] == 0, errors
    queued = Queue("default", connection=Redis.from_url(redis_url)).job_ids
    fact = await _fact(session, "hold.refund_required")
    assert f"refund-{fact}" in queued
    assert f"send_refund_notice-{fact}" in queued
    where = await send_refund_notice(str(view.id), "seats_taken", fact)
    assert where is not None
    body = await asyncio.to_thread(Path(where).read_text)
    assert "late@example.org" in body
    assert "already gone to another fan" in body.replace("=\n", "")
