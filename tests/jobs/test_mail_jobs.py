"""The fans' emails: a real SMTP server on loopback (aiosmtpd), and the .eml folder."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

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
from jobs.mail import send_order_confirmation, send_order_confirmations, send_refund_notice
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


class Relay:
    """A stricter SMTP server than ``Inbox``: it keeps each message (parsed as a mail client
    would) with the session it came in on, and can refuse recipients or end a session after
    a number of messages, as real relays do."""

    def __init__(self, *, refuse: frozenset[str] = frozenset(), per_session: int | None = None) -> None:
        self.refuse = refuse
        self.per_session = per_session
        self.messages: list[EmailMessage] = []
        self.mail_options: list[list[str]] = []
        self.sessions: list[object] = []  # each session that sent a message, kept alive
        self.sent_in: dict[int, int] = {}

    async def handle_MAIL(
        self, server: object, session: object, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.per_session is not None and self.sent_in.get(id(session), 0) >= self.per_session:
            return "421 4.7.0 Too many messages in this session"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        if session not in self.sessions:
            self.sessions.append(session)
        self.sent_in[id(session)] = self.sent_in.get(id(session), 0) + 1
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.mail_options.append(list(envelope.mail_options))
        return "250 OK"


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Relay]]:
    controllers: list[Controller] = []

    def serve(**kwargs: Any) -> Relay:
        smtputf8 = kwargs.pop("smtputf8", False)
        handler = Relay(**kwargs)
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
        controller.start()
        controllers.append(controller)
        monkeypatch.setenv("BOXOFFICE_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("BOXOFFICE_SMTP_PORT", str(port))
        monkeypatch.setenv("BOXOFFICE_SMTP_STARTTLS", "false")
        get_settings.cache_clear()
        return handler

    yield serve
    for controller in controllers:
        controller.stop()
    get_settings.cache_clear()


async def _orders(session: AsyncSession, emails: list[str]) -> list[tuple[str, str]]:
    """One confirmed order of one seat for each address, as (order id, fact id) like the relay
    hands them to the batch job."""
    event = await make_event(session, seats=len(emails), ga_capacity=1)
    for seat, address in zip(event.seat_ids, emails, strict=False):
        fan = await make_fan(session, email=address)
        view = await holds.create_hold(
            session,
            owner=Owner(fan_id=fan),
            event_id=event.event_id,
            selection=SeatSelection((seat,)),
            policy=HoldPolicy(),
        )
        await confirm_hold(session, hold_id=view.id)
        await session.commit()
    rows = await session.execute(
        text(
            "SELECT payload->>'order_id', event_id::text FROM outbox WHERE topic = 'order.confirmed' ORDER BY id"
        )
    )
    return [(str(order), str(fact)) for order, fact in rows]


async def test_a_batch_of_confirmations_goes_out_over_one_smtp_session(
    session: AsyncSession, relay: Callable[..., Relay], data_dir: Path
) -> None:
    server = relay()
    emails = [f"fan{n}@example.org" for n in range(4)]
    items = await _orders(session, emails)
    assert await send_order_confirmations(items) == 4
    assert len(server.sessions) == 1
    assert [m["To"] for m in server.messages] == emails
    assert [m["Message-ID"] for m in server.messages] == [f"<{fact}@boxoffice>" for _, fact in items]
    for message, (order_id, _) in zip(server.messages, items, strict=True):
        assert message["From"] == get_settings().mail_from
        assert message["Subject"].startswith("Your tickets for ")
        assert f"/orders/{order_id}/tickets.pdf?key=" in message.get_content()


async def test_a_refused_recipient_fails_its_own_confirmation_and_no_other(
    session: AsyncSession, relay: Callable[..., Relay], data_dir: Path
) -> None:
    server = relay(refuse=frozenset({"fan1@example.org"}))
    items = await _orders(session, ["fan0@example.org", "fan1@example.org", "fan2@example.org"])
    with pytest.raises(RuntimeError, match=r"1 of 3 confirmations failed; first: .*SMTPRecipientsRefused"):
        await send_order_confirmations(items)
    assert [m["To"] for m in server.messages] == ["fan0@example.org", "fan2@example.org"]


async def test_a_relay_that_ends_sessions_early_still_gets_every_confirmation_once(
    session: AsyncSession, relay: Callable[..., Relay], data_dir: Path
) -> None:
    # A cap on messages per session (421 at the next MAIL): the message goes again on a new
    # session, and none is lost or sent twice.
    server = relay(per_session=2)
    emails = [f"fan{n}@example.org" for n in range(5)]
    assert await send_order_confirmations(await _orders(session, emails)) == 5
    assert [m["To"] for m in server.messages] == emails
    assert len(server.sessions) == 3


async def test_a_recipient_beyond_ascii_is_sent_with_smtputf8(
    session: AsyncSession, relay: Callable[..., Relay], data_dir: Path
) -> None:
    server = relay(smtputf8=True)
    items = await _orders(session, ["zoë@example.org", "ann@example.org"])
    assert await send_order_confirmations(items) == 2
    assert [m["To"] for m in server.messages] == ["zoë@example.org", "ann@example.org"]
    assert "SMTPUTF8" in server.mail_options[0]
    assert "SMTPUTF8" not in server.mail_options[1]


async def test_a_batch_without_smtp_is_one_whole_eml_file_per_message(
    session: AsyncSession, data_dir: Path
) -> None:
    emails = [f"fan{n}@example.org" for n in range(3)]
    items = await _orders(session, emails)
    assert await send_order_confirmations(items) == 3
    assert await send_order_confirmations(items) == 3  # a retried job: the same files again
    folder = data_dir / "mail"
    assert sorted(p.suffix for p in folder.iterdir()) == [".eml"] * 3
    for (order_id, fact), address in zip(items, emails, strict=True):
        path = folder / f"{fact}-at-boxoffice.eml"
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert message["Message-ID"] == f"<{fact}@boxoffice>"
        assert message["To"] == address
        assert f"/orders/{order_id}/tickets.pdf?key=" in message.get_content()


async def test_a_confirmation_lists_only_the_tickets_still_valid_and_skips_a_missing_order(
    session: AsyncSession, data_dir: Path
) -> None:
    _, _, order_id = await _order(session, seats=2)
    fact = await _fact(session, "order.confirmed")
    revoked = await session.scalar(
        text(
            "UPDATE tickets SET state = 'revoked', revoked_at = now() WHERE id = "
            "(SELECT id FROM tickets WHERE order_id = :o ORDER BY issued_at, id LIMIT 1) RETURNING id"
        ),
        {"o": order_id},
    )
    kept = await session.scalar(
        text("SELECT id FROM tickets WHERE order_id = :o AND state = 'valid'"), {"o": order_id}
    )
    await session.commit()
    missing = (str(uuid.uuid4()), str(uuid.uuid4()))
    assert await send_order_confirmations([missing, (str(order_id), fact)]) == 1
    (path,) = (data_dir / "mail").glob("*.eml")
    body = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_content()
    assert body.count("(ticket ") == 1
    assert str(revoked) not in body
    assert f"(ticket {kept})" in body
