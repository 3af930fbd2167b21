"""Small, explicit test data built with the same tables the product uses."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.accounts.fans import TOKEN_PREFIX, token_digest
from booking.accounts.models import Fan, FanSession
from booking.catalog.models import (
    Category,
    Event,
    EventStatus,
    GAArea,
    PriceTier,
    Seat,
    SeatingLayout,
    SeatRow,
    Section,
    Venue,
)
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner
from booking.payments import service as payments
from booking.payments.gateway import Gateway


@dataclass(frozen=True)
class SmallEvent:
    event_id: uuid.UUID
    seat_tier_id: uuid.UUID
    ga_tier_id: uuid.UUID
    ga_area_id: uuid.UUID
    seat_ids: list[int]


async def make_event(session: AsyncSession, *, seats: int = 10, ga_capacity: int = 20) -> SmallEvent:
    """One venue, one section of ``seats`` seats in one row, one GA area; on sale now. Commits."""
    tag = uuid.uuid4().hex[:8]
    venue_id = await session.scalar(
        insert(Venue)
        .values(
            slug=f"v-{tag}",
            name="Test Hall",
            city="Testville",
            country="GB",
            latitude=51.5,
            longitude=-0.1,
            timezone="Europe/London",
        )
        .returning(Venue.id)
    )
    layout_id = await session.scalar(
        insert(SeatingLayout).values(venue_id=venue_id, name="Default").returning(SeatingLayout.id)
    )
    section_id = await session.scalar(
        insert(Section).values(layout_id=layout_id, name="Stalls").returning(Section.id)
    )
    row_id = await session.scalar(
        insert(SeatRow).values(section_id=section_id, label="A").returning(SeatRow.id)
    )
    seat_ids = list(
        (
            await session.scalars(
                insert(Seat).returning(Seat.id, sort_by_parameter_order=True),
                [{"row_id": row_id, "number": str(n + 1), "x": n * 10.0, "y": 0.0} for n in range(seats)],
            )
        ).all()
    )
    area_id = await session.scalar(
        insert(GAArea).values(layout_id=layout_id, name="Floor", capacity=ga_capacity).returning(GAArea.id)
    )
    now = dt.datetime.now(dt.UTC)
    event_id = await session.scalar(
        insert(Event)
        .values(
            slug=f"e-{tag}",
            title="Test Night",
            performer="The Testers",
            category=Category.MUSIC,
            venue_id=venue_id,
            layout_id=layout_id,
            city="Testville",
            timezone="Europe/London",
            starts_at=now + dt.timedelta(days=10),
            ends_at=now + dt.timedelta(days=10, hours=3),
            onsale_starts_at=now - dt.timedelta(days=1),
            onsale_ends_at=now + dt.timedelta(days=10),
            status=EventStatus.ON_SALE,
        )
        .returning(Event.id)
    )
    seat_tier = await session.scalar(
        insert(PriceTier)
        .values(event_id=event_id, name="Seated", price_minor=5000, currency="GBP")
        .returning(PriceTier.id)
    )
    ga_tier = await session.scalar(
        insert(PriceTier)
        .values(event_id=event_id, name="Standing", price_minor=3000, currency="GBP", ga_area_id=area_id)
        .returning(PriceTier.id)
    )
    await session.execute(
        text("INSERT INTO inventory_units (event_id, price_tier_id, seat_id) SELECT :e, :t, unnest(:s)"),
        {"e": event_id, "t": seat_tier, "s": seat_ids},
    )
    await session.execute(
        text(
            "INSERT INTO inventory_units (event_id, price_tier_id, ga_area_id)"
            " SELECT :e, :t, :a FROM generate_series(1, :n)"
        ),
        {"e": event_id, "t": ga_tier, "a": area_id, "n": ga_capacity},
    )
    await session.commit()
    assert event_id is not None
    assert seat_tier is not None
    assert ga_tier is not None
    assert area_id is not None
    return SmallEvent(event_id, seat_tier, ga_tier, area_id, seat_ids)


async def make_fan(session: AsyncSession, email: str | None = None) -> uuid.UUID:
    fan_id = await session.scalar(
        insert(Fan)
        .values(email=email or f"{uuid.uuid4().hex[:10]}@example.org", password_hash="x")
        .returning(Fan.id)
    )
    await session.commit()
    assert fan_id is not None
    return fan_id


async def make_signed_in_fan(session: AsyncSession) -> tuple[uuid.UUID, str]:
    """A fan with an open session, without the cost of Argon2: (fan id, bearer token). Commits."""
    fan_id = await make_fan(session)
    return fan_id, await open_fan_session(session, fan_id)


async def open_fan_session(session: AsyncSession, fan_id: uuid.UUID) -> str:
    """One more open session (another sign-in) for ``fan_id``: its bearer token. Commits."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await session.execute(
        insert(FanSession).values(
            fan_id=fan_id, token_hash=token_digest(token), expires_at=func.now() + dt.timedelta(days=1)
        )
    )
    await session.commit()
    return token


async def advance_clock(session: AsyncSession, seconds: float) -> None:
    """Move time forward for holds, as seen by the database: every deadline and creation time
    moves back by ``seconds``, which to a ``now()`` comparison is the clock moving forward.
    Commits."""
    shift = {"s": dt.timedelta(seconds=seconds)}
    await session.execute(
        text("UPDATE holds SET expires_at = expires_at - :s, created_at = created_at - :s"), shift
    )
    await session.execute(
        text("UPDATE inventory_units SET held_until = held_until - :s WHERE held_until IS NOT NULL"), shift
    )
    await session.commit()


async def pay_with_card(
    sessions: async_sessionmaker[AsyncSession],
    gateway: Gateway,
    owner: Owner,
    hold_id: uuid.UUID,
    card: str,
    policy: HoldPolicy | None = None,
) -> payments.Settlement:
    """Checkout of a hold with an offline test card, as the route does it."""
    return await payments.checkout(
        sessions,
        gateway=gateway,
        owner=owner,
        hold_id=hold_id,
        method={"card_number": card},
        policy=policy or HoldPolicy(),
    )
