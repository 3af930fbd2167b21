"""One fan, start to finish, over HTTP: search, seat map, hold, checkout, order, tickets
(JSON, QR, PDF), and the confirmation email received by a real SMTP server on loopback."""

from __future__ import annotations

import email
import re
import uuid
from collections.abc import AsyncIterator
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.catalog.demo import load_demo
from booking.settings import Settings, get_settings
from jobs.mail import send_order_confirmation
from jobs.outbox import relay_outbox
from tests.api.conftest import sign_up
from tests.conftest import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
async def journey(
    settings: Settings, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], Inbox]]:
    await load_demo(session)
    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    # The daemon's jobs read their settings from the environment, as in a worker.
    assert settings.database_url is not None
    assert settings.redis_url is not None
    for name, value in {
        "BOXOFFICE_DATABASE_URL": settings.database_url,
        "BOXOFFICE_REDIS_URL": settings.redis_url,
        "BOXOFFICE_DATA_DIR": str(settings.data_dir),
        "BOXOFFICE_SMTP_HOST": "127.0.0.1",
        "BOXOFFICE_SMTP_PORT": str(port),
        "BOXOFFICE_SMTP_STARTTLS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        async with AsyncTestClient(app=create_app(settings)) as client:
            yield client, inbox
    finally:
        smtp.stop()
        get_settings.cache_clear()


async def test_search_pick_seats_pay_and_get_the_tickets_by_email(
    journey: tuple[AsyncTestClient[Litestar], Inbox], session: AsyncSession
) -> None:
    api, inbox = journey
    fan = await sign_up(api, "journey@example.org")

    found = (await api.get("/events", params={"q": "aurora", "on_sale_now": "true"})).json()
    event_id = found["items"][0]["id"]
    detail = (await api.get(f"/events/{event_id}")).json()
    assert detail["tiers"]
    seatmap = (await api.get(f"/events/{event_id}/seatmap")).json()
    free = [
        seat["id"]
        for section in seatmap["sections"]
        for row in section["rows"]
        for seat in row["seats"]
        if seat["state"] == "available"
    ][:2]
    assert len(free) == 2

    hold = await api.post(
        "/holds",
        json={"event_id": event_id, "seat_ids": free},
        headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert hold.status_code == 201, hold.text
    paid = await api.post(
        f"/holds/{hold.json()['id']}/checkout",
        json={"provider": "offline", "card_number": "4242 4242 4242 4242"},
        headers=fan.headers,
    )
    assert paid.json()["status"] == "confirmed"
    order = (await api.get(f"/orders/{paid.json()['order_id']}", headers=fan.headers)).json()
    ticket_ids = [line["ticket_id"] for line in order["lines"]]
    assert len(ticket_ids) == 2
    for ticket_id in ticket_ids:
        assert (await api.get(f"/tickets/{ticket_id}", headers=fan.headers)).json()["token"]
        assert (await api.get(f"/tickets/{ticket_id}/qr.svg", headers=fan.headers)).status_code == 200
        assert (await api.get(f"/tickets/{ticket_id}/ticket.pdf", headers=fan.headers)).content.startswith(
            b"%PDF-"
        )

    # The daemon's part, run in-process: the relay hands order.confirmed to the mail job.
    await relay_outbox()
    fact = str(await session.scalar(text("SELECT event_id FROM outbox WHERE topic = 'order.confirmed'")))
    await send_order_confirmation(order["id"], fact)
    (message,) = inbox.messages
    assert message["To"] == "journey@example.org"
    assert not [p for p in message.walk() if p.get_content_type() == "application/pdf"]
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = re.search(r"http://\S+/orders/(\S+)/tickets\.pdf\?key=(\S+)", body)
    assert link is not None, body
    assert link.group(1) == order["id"]
    # The link is the credential: opened without signing in, one page per ticket.
    pdf = await api.get(f"/orders/{link.group(1)}/tickets.pdf", params={"key": link.group(2)})
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf.content)) == 2
