"""Venues and layouts for the event-administration tests, built with the product's tables in a
few set-based statements (a 20,000-place arena in well under a second), and the request an
organiser would send for an event on them."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.admin import NewEvent
from booking.catalog.models import Category, GAArea, SeatingLayout, Venue
from booking.catalog.pricing import TierSpec


@dataclass(frozen=True)
class Arena:
    venue_id: uuid.UUID
    slug: str
    layout_id: uuid.UUID
    sections: tuple[str, ...]
    rows: int
    seats_per_row: int
    standing: int

    @property
    def seats(self) -> int:
        return len(self.sections) * self.rows * self.seats_per_row

    @property
    def places(self) -> int:
        return self.seats + self.standing


async def make_arena(
    session: AsyncSession,
    *,
    sections: int = 16,
    rows: int = 25,
    seats_per_row: int = 45,
    standing: int = 2000,
    city: str = "Leeds",
) -> Arena:
    """A venue with one layout: ``sections`` blocks of ``rows`` rows (A, B, ...) of
    ``seats_per_row`` seats, and a standing floor. The default is 18,000 seats and 2,000
    standing: 20,000 places. Commits."""
    tag = uuid.uuid4().hex[:8]
    venue_id = await session.scalar(
        insert(Venue)
        .values(
            slug=f"arena-{tag}",
            name="Northern Arena",
            city=city,
            country="GB",
            latitude=53.8,
            longitude=-1.55,
            timezone="Europe/London",
        )
        .returning(Venue.id)
    )
    layout_id = await session.scalar(
        insert(SeatingLayout).values(venue_id=venue_id, name="End stage").returning(SeatingLayout.id)
    )
    names = tuple(f"Block {n}" for n in range(1, sections + 1))
    await session.execute(
        text(
            "INSERT INTO sections (layout_id, name, sort_order)"
            " SELECT :layout, name, ord FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS s(name, ord)"
        ),
        {"layout": layout_id, "names": list(names)},
    )
    await session.execute(
        text(
            "INSERT INTO seat_rows (section_id, label, sort_order)"
            " SELECT s.id, chr(65 + r), r FROM sections s, generate_series(0, :rows - 1) AS r"
            " WHERE s.layout_id = :layout"
        ),
        {"layout": layout_id, "rows": rows},
    )
    await session.execute(
        text(
            "INSERT INTO seats (row_id, number, x, y)"
            " SELECT sr.id, n::text, s.sort_order * 500 + n * 10, sr.sort_order * 10"
            " FROM seat_rows sr JOIN sections s ON s.id = sr.section_id, generate_series(1, :seats) AS n"
            " WHERE s.layout_id = :layout"
        ),
        {"layout": layout_id, "seats": seats_per_row},
    )
    if standing:
        await session.execute(
            insert(GAArea).values(layout_id=layout_id, name="Standing Floor", capacity=standing)
        )
    await session.commit()
    assert venue_id is not None
    assert layout_id is not None
    return Arena(venue_id, f"arena-{tag}", layout_id, names, rows, seats_per_row, standing)


def arena_tiers(arena: Arena, *, price: int = 4500) -> tuple[TierSpec, ...]:
    """The first quarter of the blocks (at least one) Premium, the rest Standard, the floor
    Standing: every place once."""
    front = max(1, len(arena.sections) // 4)
    return (
        TierSpec("Premium", price * 2, sections=arena.sections[:front]),
        TierSpec("Standard", price, sections=arena.sections[front:]),
        *((TierSpec("Standing", price - 1000, ga_area="Standing Floor"),) if arena.standing else ()),
    )


def new_event(arena: Arena, **changes: object) -> NewEvent:
    """An event a month away whose sale opened yesterday (it sells once put on sale)."""
    now = dt.datetime.now(dt.UTC)
    fields: dict[str, object] = {
        "title": "Aurora Lights: Arena Tour",
        "performer": "Aurora Lights",
        "category": Category.MUSIC,
        "venue": arena.slug,
        "starts_at": (now + dt.timedelta(days=30)).replace(microsecond=0),
        "onsale_starts_at": (now - dt.timedelta(days=1)).replace(microsecond=0),
        "currency": "GBP",
        "tiers": arena_tiers(arena),
        "description": "Synth-pop, the whole arena.",
    }
    fields.update(changes)
    return NewEvent(**fields)  # type: ignore[arg-type]
