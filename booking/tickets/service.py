"""Tickets over the database: the fan's view of a ticket, its token, and the online gate check.

Verbs only read and run in the caller's transaction. A fan reaches a ticket through the order
that owns it (``orders.fan_id``); anyone else's ticket is reported exactly as a missing one.
Box-office staff reach the tickets of box-office orders only (``box_office_ticket_view``),
never a fan's.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import ColumnElement, Row, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import Event, PriceTier, Seat, SeatRow, Section, Venue
from booking.errors import TicketNotFound, TicketRevoked
from booking.inventory.models import InventoryUnit
from booking.orders.models import Order, OrderChannel, OrderItem
from booking.tickets.models import Ticket, TicketState
from booking.tickets.signing import TicketClaims, sign_ticket, verify


@dataclass(frozen=True)
class TicketView:
    """Everything a fan is shown about one ticket.

    ``starts_at`` is UTC; ``timezone`` is the event's, for showing local time (see
    ``local_starts_at``). ``token`` is the signed code for the QR; it is None once the ticket
    is revoked, so a refunded ticket is never handed a fresh code to show at a gate.
    """

    ticket_id: uuid.UUID
    order_id: uuid.UUID
    event_id: uuid.UUID
    state: TicketState
    event_title: str
    performer: str
    venue_name: str
    venue_city: str
    starts_at: dt.datetime
    timezone: str
    seat: str
    issued_at: dt.datetime
    token: str | None

    @property
    def local_starts_at(self) -> dt.datetime:
        return self.starts_at.astimezone(ZoneInfo(self.timezone))


@dataclass(frozen=True)
class TicketCheck:
    """The result of the online gate check: a genuine token, and what the database says of
    its ticket now."""

    claims: TicketClaims
    state: TicketState
    revoked_at: dt.datetime | None
    checked_in_at: dt.datetime | None

    @property
    def admissible(self) -> bool:
        return self.state == TicketState.VALID


def seat_label(*, section: str | None, row: str | None, number: str | None, tier_name: str) -> str:
    """What a steward reads: section, row and seat for a reserved seat, the tier for GA."""
    if section is not None and row is not None and number is not None:
        return f"{section}, Row {row}, Seat {number}"
    return tier_name


# Where a unit is: its section's name, its row's label and its seat's number, all null for a
# place of a GA area. Selected next to ``join_seat_place``.
SEAT_PLACE_COLUMNS = (Section.name.label("section"), SeatRow.label.label("row"), Seat.number.label("number"))


def join_seat_place(query: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    """``query``, which has ``InventoryUnit`` among its tables, with the unit's seat, row and
    section outer-joined for ``SEAT_PLACE_COLUMNS``: joins, so a whole order's or ticket list's
    labels come in the one statement that reads them."""
    return (
        query.outerjoin(Seat, Seat.id == InventoryUnit.seat_id)
        .outerjoin(SeatRow, SeatRow.id == Seat.row_id)
        .outerjoin(Section, Section.id == SeatRow.section_id)
    )


_TICKET_COLUMNS = (
    Ticket.id,
    Ticket.order_id,
    Ticket.event_id,
    Ticket.state,
    Ticket.issued_at,
    Event.title,
    Event.performer,
    Event.starts_at,
    Event.timezone,
    Venue.name.label("venue_name"),
    Venue.city.label("venue_city"),
    *SEAT_PLACE_COLUMNS,
    PriceTier.name.label("tier_name"),
)


def _ticket_rows(*where: ColumnElement[bool]) -> Select[*tuple[Any, ...]]:
    """Tickets with everything their view shows, in one statement: a ticket page is read far
    more often than tickets are sold, and an order's tickets are read together. Columns, not
    entities: loading whole events and venues per ticket was most of the cost of a read."""
    return join_seat_place(
        select(*_TICKET_COLUMNS)
        .join(Order, Order.id == Ticket.order_id)
        .join(Event, Event.id == Ticket.event_id)
        .join(Venue, Venue.id == Event.venue_id)
        .join(OrderItem, OrderItem.id == Ticket.order_item_id)
        .join(PriceTier, PriceTier.id == OrderItem.price_tier_id)
        .join(InventoryUnit, InventoryUnit.id == Ticket.unit_id)
    ).where(*where)


def _view(row: Row[*tuple[Any, ...]], signing_key: Ed25519PrivateKey) -> TicketView:
    seat = seat_label(section=row.section, row=row.row, number=row.number, tier_name=row.tier_name)
    token = None
    if row.state == TicketState.VALID:
        token = sign_ticket(
            signing_key,
            ticket_id=row.id,
            order_id=row.order_id,
            event_id=row.event_id,
            seat=seat,
            issued_at=row.issued_at,
        )
    return TicketView(
        ticket_id=row.id,
        order_id=row.order_id,
        event_id=row.event_id,
        state=row.state,
        event_title=row.title,
        performer=row.performer,
        venue_name=row.venue_name,
        venue_city=row.venue_city,
        starts_at=row.starts_at,
        timezone=row.timezone,
        seat=seat,
        issued_at=row.issued_at,
        token=token,
    )


async def _load(
    session: AsyncSession, ticket_id: uuid.UUID, signing_key: Ed25519PrivateKey, *reader: ColumnElement[bool]
) -> TicketView:
    """The ticket, if its order also meets every ``reader`` condition (who may see it); none
    for the callers that act for the system (jobs, printing)."""
    row = (await session.execute(_ticket_rows(Ticket.id == ticket_id, *reader))).one_or_none()
    if row is None:
        raise TicketNotFound()
    return _view(row, signing_key)


async def order_tickets(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    signing_key: Ed25519PrivateKey,
    fan_id: uuid.UUID | None = None,
) -> list[TicketView]:
    """Every ticket of an order, valid or revoked, in the order they were issued (one
    statement). With ``fan_id``, only if the order is that fan's; without, for the system
    (the confirmation email, a download link checked by its key).

    An order that does not exist, or is another fan's, has no tickets: the caller decides
    whether that is "not found".
    """
    reader = [Order.fan_id == fan_id] if fan_id is not None else []
    found = await tickets_of_orders(session, [order_id], signing_key=signing_key, reader=reader)
    return found.get(order_id, [])


async def tickets_of_orders(
    session: AsyncSession,
    order_ids: Collection[uuid.UUID],
    *,
    signing_key: Ed25519PrivateKey,
    reader: Iterable[ColumnElement[bool]] = (),
) -> dict[uuid.UUID, list[TicketView]]:
    """The tickets of several orders in one statement, by order, each order's in the order
    they were issued; orders without tickets (or not passing ``reader``) are absent."""
    query = _ticket_rows(Ticket.order_id.in_(list(order_ids)), *reader).order_by(Ticket.issued_at, Ticket.id)
    found: dict[uuid.UUID, list[TicketView]] = {}
    for row in (await session.execute(query)).all():
        view = _view(row, signing_key)
        found.setdefault(view.order_id, []).append(view)
    return found


async def ticket_view(
    session: AsyncSession, ticket_id: uuid.UUID, fan_id: uuid.UUID, *, signing_key: Ed25519PrivateKey
) -> TicketView:
    """The fan's own ticket, with its signed code while it is valid.

    Raises:
        TicketNotFound: no such ticket, or it belongs to someone else (indistinguishable).
    """
    return await _load(session, ticket_id, signing_key, Order.fan_id == fan_id)


async def box_office_ticket_view(
    session: AsyncSession,
    ticket_id: uuid.UUID,
    *,
    staff_key_id: uuid.UUID | None,
    signing_key: Ed25519PrivateKey,
) -> TicketView:
    """A ticket of a box-office order, for the till that sold it (``staff_key_id``) or, with
    None, for a supervisor: any box-office ticket. Tickets of online orders are the fans'
    and are never reached here.

    Raises:
        TicketNotFound: no such ticket, a ticket of an online order, or (with a key) a ticket
            another key sold: all indistinguishable.
    """
    reader = [Order.channel == OrderChannel.BOX_OFFICE]
    if staff_key_id is not None:
        reader.append(Order.staff_key_id == staff_key_id)
    return await _load(session, ticket_id, signing_key, *reader)


async def ticket_token(session: AsyncSession, ticket_id: uuid.UUID, *, signing_key: Ed25519PrivateKey) -> str:
    """The signed code of a valid ticket, whoever owns it: for staff and jobs (box-office
    printing, ticket emails), never for a fan-facing answer, which goes through
    ``ticket_view``. The same ticket and key always give the same code.

    Raises:
        TicketNotFound: no such ticket.
        TicketRevoked: the ticket was revoked (its order refunded or cancelled).
    """
    view = await _load(session, ticket_id, signing_key)
    if view.token is None:
        raise TicketRevoked()
    return view.token


async def check_ticket(
    session: AsyncSession, token: str, public_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey]
) -> TicketCheck:
    """Verify ``token`` as ``verify`` does offline, then report its ticket's state as the
    database has it now, which is where revocation is seen. Reads only; checking a ticket
    does not check it in.

    A genuine token whose ticket is missing, or whose order or event differ from what was
    signed, is reported as not found: it does not describe a ticket that exists.

    Raises:
        TicketTokenMalformed, TicketKeyUnknown, TicketSignatureInvalid: as ``verify``.
        TicketNotFound: no ticket matches the token's claims.
    """
    claims = verify(token, public_keys)
    ticket = await session.scalar(
        select(Ticket)
        .where(
            Ticket.id == claims.ticket_id,
            Ticket.order_id == claims.order_id,
            Ticket.event_id == claims.event_id,
        )
        .execution_options(populate_existing=True)
    )
    if ticket is None:
        raise TicketNotFound()
    return TicketCheck(
        claims=claims,
        state=ticket.state,
        revoked_at=ticket.revoked_at,
        checked_in_at=ticket.checked_in_at,
    )
