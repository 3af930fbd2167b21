"""The emails fans get: the confirmation with the link to their tickets, and the notice of a
refund.

Messages are built here (pure data, no I/O) and sent by the daemon. Each message's
``Message-ID`` comes from the outbox fact that caused it, so a repeated relay produces the
same message and a mailbox (or the .eml folder) recognises the duplicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Fan
from booking.catalog.models import Event
from booking.holds.models import Hold
from booking.money import money
from booking.orders.models import Order, OrderChannel
from booking.tickets.links import order_tickets_path
from booking.tickets.service import tickets_of_orders


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


@dataclass(frozen=True)
class LinkSigning:
    """What a confirmation needs to draw its tickets' link: the keys and the public address."""

    signing_key: Ed25519PrivateKey
    link_secret: bytes
    base_url: str


async def order_confirmations(
    session: AsyncSession, facts: Sequence[tuple[uuid.UUID, uuid.UUID]], *, sender: str, links: LinkSigning
) -> dict[uuid.UUID, EmailMessage | None]:
    """The confirmations of several orders, given as (order id, message id): two reads for
    all of them, whatever their number of tickets. Each says what was bought, for which event
    and when (in the event's own time zone), the total, and the link that opens the tickets
    as a PDF with a page and QR code each (``booking.tickets.links`` says why a link and not
    attachments). An order maps to None when nobody can receive it (a walk-up sale without an
    email), when it has no valid ticket left, or when it does not exist."""
    order_ids = [order_id for order_id, _ in facts]
    recipients = {
        row.id: row
        for row in await session.execute(
            select(
                Order.id,
                Order.total_minor,
                Order.currency,
                func.coalesce(Fan.email, Order.buyer_email).label("to"),
            )
            .outerjoin(Fan, Fan.id == Order.fan_id)
            .where(Order.id.in_(order_ids))
        )
    }
    tickets = await tickets_of_orders(session, order_ids, signing_key=links.signing_key)
    messages: dict[uuid.UUID, EmailMessage | None] = {}
    for order_id, message_id in facts:
        order = recipients.get(order_id)
        valid = [ticket for ticket in tickets.get(order_id, []) if ticket.token is not None]
        if order is None or order.to is None or not valid:
            messages[order_id] = None
            continue
        first = valid[0]
        # Fans read the time where the event happens, as on the ticket itself.
        local = first.local_starts_at
        lines = [f"  - {ticket.seat} (ticket {ticket.ticket_id})" for ticket in valid]
        link = links.base_url + order_tickets_path(links.link_secret, order_id)
        body = (
            f"Your order {order_id} for {first.event_title} "
            f"({local:%A %d %B %Y, %H:%M} {local:%Z}, {first.timezone}) is confirmed.\n\n"
            "Tickets:\n"
            + "\n".join(lines)
            + f"\n\nTotal paid: {money(order.total_minor, order.currency)}\n\n"
            "Your tickets, a page each with the QR code to show at the gate, printed or on your phone:\n"
            f"{link}\n\n"
            "Anyone with this link can open the tickets: keep it to yourself. If the order is "
            "cancelled or refunded, the link shows no ticket any more.\n"
        )
        subject = f"Your tickets for {first.event_title}"
        messages[order_id] = _message(
            message_id=message_id, sender=sender, to=str(order.to), subject=subject, body=body
        )
    return messages


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


async def cancellation_notices(
    session: AsyncSession, facts: Sequence[tuple[uuid.UUID, uuid.UUID]], *, sender: str
) -> dict[uuid.UUID, EmailMessage | None]:
    """The notices of orders refunded because their event was cancelled, given as (order id,
    message id): one read for all of them. Each names the event and its date (in the event's
    own time zone), and says the whole amount comes back: through the payment provider, or
    in person for an order paid at a till. An order maps to None when nobody can receive it
    or it does not exist."""
    rows = {
        row.id: row
        for row in await session.execute(
            select(
                Order.id,
                Order.total_minor,
                Order.currency,
                Order.channel,
                Event.title,
                Event.starts_at,
                Event.timezone,
                func.coalesce(Fan.email, Order.buyer_email).label("to"),
            )
            .join(Event, Event.id == Order.event_id)
            .outerjoin(Fan, Fan.id == Order.fan_id)
            .where(Order.id.in_([order_id for order_id, _ in facts]))
        )
    }
    messages: dict[uuid.UUID, EmailMessage | None] = {}
    for order_id, message_id in facts:
        row = rows.get(order_id)
        if row is None or row.to is None:
            messages[order_id] = None
            continue
        try:
            local = row.starts_at.astimezone(ZoneInfo(row.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            local = row.starts_at
        amount = money(row.total_minor, row.currency)
        how = (
            "It was paid at the box office: take this email there and the money is handed back."
            if row.channel == OrderChannel.BOX_OFFICE
            else "It goes back to the card you paid with and reaches your account within a few working days."
        )
        body = (
            f"We are sorry: {row.title} on {local:%A %d %B %Y, %H:%M} {local:%Z} has been cancelled.\n\n"
            f"Your order {order_id} is refunded in full, {amount}. {how}\n\n"
            "Its tickets no longer work; there is nothing you need to do.\n"
        )
        messages[order_id] = _message(
            message_id=message_id, sender=sender, to=str(row.to), subject=f"Cancelled: {row.title}", body=body
        )
    return messages
