"""The emails fans get: the confirmation with the link to their tickets, and the notice of a
refund.

Messages are built here (pure data, no I/O) and sent by the daemon. Each message's
``Message-ID`` comes from the outbox fact that caused it, so a repeated relay produces the
same message and a mailbox (or the .eml folder) recognises the duplicate.

A message is a ``Mail``: its fields, and its RFC 5322 / MIME bytes written out directly,
byte for byte what the ``email`` package makes of the same message with its default policy.
The package parses every header it is given and builds a class per header each time; for a
sale's thousands of confirmations that was most of the worker's CPU per email, for one
message shape (a single text/plain part) whose headers repeat from one message to the next.
"""

from __future__ import annotations

import binascii
import email.policy
import email.utils
import functools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email import quoprimime
from email.message import EmailMessage
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Fan
from booking.catalog.models import Event, PriceTier
from booking.holds.models import Hold
from booking.inventory.models import InventoryUnit
from booking.money import money
from booking.orders.models import Order, OrderChannel, OrderItem
from booking.tickets.links import order_tickets_path
from booking.tickets.models import Ticket, TicketState
from booking.tickets.service import SEAT_PLACE_COLUMNS, join_seat_place, seat_label

_POLICY = email.policy.default
# The default policy's, which ``EmailMessage`` folds headers and wraps encoded bodies at.
_MAX_LINE = 78
# An address the email package writes out exactly as given: ASCII, no display name, dot-atoms
# of letters, digits and ``._%+-`` only (so never an ``=?`` that could open an encoded word),
# and short enough that its line needs no folding.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_ADDRESS_MAX = _MAX_LINE - len("To: ")


@functools.lru_cache(maxsize=1024)
def _header_line(name: str, value: str) -> str:
    """``name: value`` as the default policy folds it, ending in a newline. Cached: the sender
    is the same for every message, and a subject for every order of one event."""
    return str(_POLICY.header_factory(name, value).fold(policy=_POLICY))


@functools.lru_cache(maxsize=1024)
def _addresses(name: str, value: str) -> tuple[str, ...]:
    """The bare addresses of a header, as ``smtplib`` takes them from the parsed header."""
    return tuple(address for _, address in email.utils.getaddresses([_POLICY.header_factory(name, value)]))


def _to_line(to: str) -> str:
    if len(to) <= _PLAIN_ADDRESS_MAX and _PLAIN_ADDRESS.fullmatch(to):
        return f"To: {to}\n"
    return _header_line("To", to)


def _encode_text(body: str) -> tuple[str, bytes]:
    """The transfer encoding and encoded payload of a UTF-8 text body, chosen as
    ``EmailMessage.set_content`` chooses them: 7bit (or 8bit, for non-ASCII text) while every
    line fits, else quoted-printable, or base64 when that is shorter for the first ten lines."""
    limit = _MAX_LINE
    lines = body.encode("utf-8").splitlines()
    normal = b"\n".join(lines) + b"\n"
    if max(map(len, lines), default=0) <= limit:
        return ("7bit" if normal.isascii() else "8bit"), normal
    sniff = b"\n".join(lines[:10]) + b"\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), limit)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        step = limit // 4 * 3
        chunks = (normal[i : i + step] for i in range(0, len(normal), step))
        return "base64", b"".join(binascii.b2a_base64(chunk) for chunk in chunks)
    if len(lines) <= 10:
        return "quoted-printable", sniff_qp.encode("ascii")
    return "quoted-printable", quoprimime.body_encode(normal.decode("latin-1"), limit).encode("ascii")


@dataclass(frozen=True)
class Mail:
    """One plain-text email to one recipient.

    ``as_bytes`` is the message as ``as_email_message()`` flattens to with the default policy,
    byte for byte: the same headers in the same order (From, To, Subject, Message-ID, then the
    MIME ones), encoded words and folding where the package would put them, the same transfer
    encoding of the body.

    Raises:
        ValueError: a header value (sender, recipient or subject) spans lines, which the
            ``email`` package refuses too.
    """

    message_id: uuid.UUID
    sender: str
    to: str
    subject: str
    body: str

    def __post_init__(self) -> None:
        for name, value in (("From", self.sender), ("To", self.to), ("Subject", self.subject)):
            if len(value.splitlines()) > 1:
                raise ValueError(f"the {name} header may not contain line breaks: {value!r}")

    @property
    def message_id_header(self) -> str:
        return f"<{self.message_id}@boxoffice>"

    def as_bytes(self, linesep: Literal["\n", "\r\n"] = "\n") -> bytes:
        """The whole message, each line ending in ``linesep`` (CRLF for SMTP's DATA)."""
        cte, payload = _encode_text(self.body)
        head = (
            _header_line("From", self.sender)
            + _to_line(self.to)
            + _header_line("Subject", self.subject)
            + f"Message-ID: {self.message_id_header}\n"
            + 'Content-Type: text/plain; charset="utf-8"\n'
            + f"Content-Transfer-Encoding: {cte}\n"
            + "MIME-Version: 1.0\n\n"
        )
        data = head.encode("ascii", "surrogateescape") + payload
        # Every line break in ``data`` is a bare LF: header values hold none, and the body was
        # split into lines and joined again with LF.
        return data if linesep == "\n" else data.replace(b"\n", linesep.encode("ascii"))

    def envelope(self) -> tuple[str, list[str]]:
        """The SMTP envelope, as ``smtplib.SMTP.send_message`` derives it from From and To:
        the sender's bare address and the recipients'."""
        recipients = [self.to] if _PLAIN_ADDRESS.fullmatch(self.to) else list(_addresses("To", self.to))
        return _addresses("From", self.sender)[0], recipients

    def as_email_message(self) -> EmailMessage:
        """The same message built by the ``email`` package: for what needs the package's own
        rendering (an address that is not ASCII needs SMTPUTF8 and raw UTF-8 headers)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Message-ID"] = self.message_id_header
        message.set_content(self.body)
        return message


async def _recipient(session: AsyncSession, fan_id: uuid.UUID | None, fallback: str | None) -> str | None:
    if fan_id is not None:
        email = await session.scalar(select(Fan.email).where(Fan.id == fan_id))
        if email:
            return str(email)
    return fallback


@dataclass(frozen=True)
class LinkSigning:
    """What a confirmation needs to draw its tickets' link: the link secret and the public
    address. (The email carries the link, never a ticket's signed code.)"""

    link_secret: bytes
    base_url: str


# Every valid ticket of the orders (``order_ids``, expanding), one row each in the order they
# were issued, with what its confirmation shows: its seat, its event, and its order's total
# and recipient. One statement, made once: the confirmations of a slice of orders cost one
# round trip, and an order with no valid ticket left has no row at all.
_CONFIRMATION_ROWS = (
    join_seat_place(
        select(
            Ticket.order_id,
            Ticket.id,
            Order.total_minor,
            Order.currency,
            func.coalesce(Fan.email, Order.buyer_email).label("to"),
            Event.title,
            Event.starts_at,
            Event.timezone,
            *SEAT_PLACE_COLUMNS,
            PriceTier.name.label("tier_name"),
        )
        .join(Order, Order.id == Ticket.order_id)
        .outerjoin(Fan, Fan.id == Order.fan_id)
        .join(Event, Event.id == Ticket.event_id)
        .join(OrderItem, OrderItem.id == Ticket.order_item_id)
        .join(PriceTier, PriceTier.id == OrderItem.price_tier_id)
        .join(InventoryUnit, InventoryUnit.id == Ticket.unit_id)
    )
    .where(Ticket.order_id.in_(bindparam("order_ids", expanding=True)), Ticket.state == TicketState.VALID)
    .order_by(Ticket.issued_at, Ticket.id)
)


async def order_confirmations(
    session: AsyncSession, facts: Sequence[tuple[uuid.UUID, uuid.UUID]], *, sender: str, links: LinkSigning
) -> dict[uuid.UUID, Mail | None]:
    """The confirmations of several orders, given as (order id, message id): one read for
    all of them, whatever their number of tickets. Each says what was bought, for which event
    and when (in the event's own time zone), the total, and the link that opens the tickets
    as a PDF with a page and QR code each (``booking.tickets.links`` says why a link and not
    attachments). An order maps to None when nobody can receive it (a walk-up sale without an
    email), when it has no valid ticket left, or when it does not exist.

    Raises:
        ValueError: an address or the event's title spans lines (see ``Mail``).
    """
    tickets: dict[uuid.UUID, list[Any]] = {}
    order_ids = [order_id for order_id, _ in facts]
    for row in await session.execute(_CONFIRMATION_ROWS, {"order_ids": order_ids}):
        tickets.setdefault(row.order_id, []).append(row)
    messages: dict[uuid.UUID, Mail | None] = {}
    for order_id, message_id in facts:
        valid = tickets.get(order_id)
        if not valid or valid[0].to is None:
            messages[order_id] = None
            continue
        first = valid[0]
        # Fans read the time where the event happens, as on the ticket itself.
        local = first.starts_at.astimezone(ZoneInfo(first.timezone))
        lines = [
            f"  - {seat_label(section=t.section, row=t.row, number=t.number, tier_name=t.tier_name)}"
            f" (ticket {t.id})"
            for t in valid
        ]
        link = links.base_url + order_tickets_path(links.link_secret, order_id)
        body = (
            f"Your order {order_id} for {first.title} "
            f"({local:%A %d %B %Y, %H:%M} {local:%Z}, {first.timezone}) is confirmed.\n\n"
            "Tickets:\n"
            + "\n".join(lines)
            + f"\n\nTotal paid: {money(first.total_minor, first.currency)}\n\n"
            "Your tickets, a page each with the QR code to show at the gate, printed or on your phone:\n"
            f"{link}\n\n"
            "Anyone with this link can open the tickets: keep it to yourself. If the order is "
            "cancelled or refunded, the link shows no ticket any more.\n"
        )
        messages[order_id] = Mail(
            message_id=message_id,
            sender=sender,
            to=str(first.to),
            subject=f"Your tickets for {first.title}",
            body=body,
        )
    return messages


async def refund_notice(
    session: AsyncSession, *, hold_id: uuid.UUID, reason: str, message_id: uuid.UUID, sender: str
) -> Mail | None:
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
    return Mail(message_id=message_id, sender=sender, to=to, subject=f"Refund for {row.title}", body=body)


async def cancellation_notices(
    session: AsyncSession, facts: Sequence[tuple[uuid.UUID, uuid.UUID]], *, sender: str
) -> dict[uuid.UUID, Mail | None]:
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
    messages: dict[uuid.UUID, Mail | None] = {}
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
        messages[order_id] = Mail(
            message_id=message_id, sender=sender, to=str(row.to), subject=f"Cancelled: {row.title}", body=body
        )
    return messages
