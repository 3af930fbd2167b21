"""The emails fans get: the confirmation with their tickets, and the notice of a refund.

Messages are built here (pure data, no I/O) and sent by the daemon. Each message's
``Message-ID`` comes from the outbox fact that caused it, so a repeated relay produces the
same message and a mailbox (or the .eml folder) recognises the duplicate.
"""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Fan
from booking.catalog.models import Event
from booking.holds.models import Hold
from booking.money import money
from booking.orders.models import Order
from booking.orders.service import get_order
from booking.tickets import render
from booking.tickets.service import ticket_view


def _message(*, message_id: uuid.UUID, sender: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id}@boxoffice>"
    message.set_content(body)
    return message


async def _recipient(session: AsyncSession, fan_id: uuid.UUID | None, fallback: str | None) -> str | None:
    if fan_id is not None:
        email = await session.scalar(select(Fan.email).where(Fan.id == fan_id))
        if email:
            return str(email)
    return fallback


async def order_confirmation(
    session: AsyncSession,
    *,
    order_id: uuid.UUID,
    message_id: uuid.UUID,
    sender: str,
    signing_key: Ed25519PrivateKey,
) -> EmailMessage | None:
    """The confirmation of an order with one PDF ticket per seat or place attached. None when
    nobody can receive it (a walk-up sale without an email)."""
    order = await session.get(Order, order_id)
    if order is None:
        return None
    to = await _recipient(session, order.fan_id, order.buyer_email)
    if to is None:
        return None
    view = await get_order(session, order_id, fan_id=None)
    title, starts_at, timezone = (
        await session.execute(
            select(Event.title, Event.starts_at, Event.timezone).where(Event.id == order.event_id)
        )
    ).one()
    # Fans read the time where the event happens, as on the ticket itself.
    local = starts_at.astimezone(ZoneInfo(timezone))
    lines = []
    pdfs: list[tuple[str, bytes]] = []
    for line in view.lines:
        if line.ticket_id is None:
            continue
        ticket = (
            await ticket_view(session, line.ticket_id, order.fan_id, signing_key=signing_key)
            if order.fan_id
            else None
        )
        if ticket is None:
            continue
        lines.append(f"  - {ticket.seat} (ticket {ticket.ticket_id})")
        if ticket.token is not None:
            pdfs.append((f"ticket-{ticket.ticket_id}.pdf", render.render_ticket_pdf(ticket)))
    body = (
        f"Your order {order_id} for {title} ({local:%A %d %B %Y, %H:%M} {local:%Z}, {timezone}) "
        "is confirmed.\n\n"
        f"Tickets:\n" + "\n".join(lines) + f"\n\nTotal paid: {money(view.total_minor, view.currency)}\n\n"
        "Each ticket is attached as a PDF with its QR code; show it at the gate.\n"
    )
    message = _message(
        message_id=message_id, sender=sender, to=to, subject=f"Your tickets for {title}", body=body
    )
    for name, pdf in pdfs:
        message.add_attachment(pdf, maintype="application", subtype="pdf", filename=name)
    return message


async def refund_notice(
    session: AsyncSession, *, hold_id: uuid.UUID, reason: str, message_id: uuid.UUID, sender: str
) -> EmailMessage | None:
    """Tells a fan whose payment arrived after their seats went to someone else that the
    money is on its way back, and why."""
    row = (
        await session.execute(
            select(Hold.fan_id, Hold.total_minor, Hold.currency, Event.title)
            .join(Event, Event.id == Hold.event_id)
            .where(Hold.id == hold_id)
        )
    ).first()
    if row is None:
        return None
    to = await _recipient(session, row.fan_id, None)
    if to is None:
        return None
    reasons = {
        "seats_taken": (
            "your payment reached us after your hold had expired, "
            "and the seats had already gone to another fan"
        ),
        "duplicate_payment": "the booking was already paid by another payment, so this one was not needed",
        "ticket_cap": (
            "your payment reached us after your hold had expired, and with the tickets you have bought "
            "since, it would take you past the limit of tickets per fan for this event"
        ),
    }
    why = reasons.get(reason, reason)
    body = (
        f"We could not complete your booking for {row.title}: {why}.\n\n"
        f"Your payment of {money(row.total_minor, row.currency)} is being refunded in full; "
        "it reaches your account within a few working days.\n"
    )
    return _message(message_id=message_id, sender=sender, to=to, subject=f"Refund for {row.title}", body=body)
