from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking.catalog.demo import load_demo
from booking.db import make_sessionmaker


async def _scalar(session: AsyncSession, sql: str) -> int:
    return int(await session.scalar(text(sql)) or 0)


async def test_demo_has_a_big_seated_venue_ga_and_a_dozen_varied_events(session: AsyncSession) -> None:
    result = await load_demo(session)
    assert result.loaded
    # The biggest venue that has events (the example layouts' venues have none).
    biggest = await session.execute(
        text(
            "SELECT v.name, count(*) AS seats, count(DISTINCT s.id) AS sections FROM venues v"
            " JOIN seating_layouts l ON l.venue_id = v.id JOIN sections s ON s.layout_id = l.id"
            " JOIN seat_rows r ON r.section_id = s.id JOIN seats ON seats.row_id = r.id"
            " WHERE EXISTS (SELECT 1 FROM events e WHERE e.layout_id = l.id)"
            " GROUP BY v.name ORDER BY seats DESC LIMIT 1"
        )
    )
    name, seats, sections = biggest.one()
    assert seats >= 2000
    assert sections >= 3
    assert await _scalar(session, "SELECT count(*) FROM ga_areas") >= 1
    assert await _scalar(session, "SELECT count(*) FROM seats WHERE accessible") > 0
    assert await _scalar(session, "SELECT count(*) FROM events") >= 12
    assert await _scalar(session, "SELECT count(DISTINCT category) FROM events") >= 5
    assert await _scalar(session, "SELECT count(DISTINCT city) FROM events") >= 3
    assert (
        await _scalar(
            session, "SELECT min(n) FROM (SELECT count(*) AS n FROM price_tiers GROUP BY event_id) t"
        )
        >= 1
    )
    # The arena's events sell several tiers at different prices.
    tiers_per_event = (
        "SELECT max(n) FROM (SELECT count(DISTINCT price_minor) AS n FROM price_tiers GROUP BY event_id) t"
    )
    assert await _scalar(session, tiers_per_event) >= 4
    on_sale = await _scalar(session, "SELECT count(*) FROM events WHERE onsale_starts_at <= now()")
    upcoming = await _scalar(session, "SELECT count(*) FROM events WHERE onsale_starts_at > now()")
    assert on_sale > 0
    assert upcoming > 0
    # Units are seats of the event's own layout, and the arena sells every one of its seats.
    foreign_seats = (
        "SELECT count(*) FROM inventory_units u JOIN events e ON e.id = u.event_id"
        " JOIN seats ON seats.id = u.seat_id JOIN seat_rows r ON r.id = seats.row_id"
        " JOIN sections s ON s.id = r.section_id WHERE s.layout_id <> e.layout_id"
    )
    assert await _scalar(session, foreign_seats) == 0
    arena_seat_units = (
        "SELECT min(n) FROM (SELECT count(u.seat_id) AS n FROM events e JOIN venues v ON v.id = e.venue_id"
        " JOIN inventory_units u ON u.event_id = e.id WHERE v.slug = 'harbour-arena' GROUP BY e.id) t"
    )
    assert await _scalar(session, arena_seat_units) == seats
    assert result.units == await _scalar(session, "SELECT count(*) FROM inventory_units")
    assert await _scalar(session, "SELECT count(*) FROM inventory_units WHERE state <> 'available'") == 0
    assert name == "Harbour Arena"
    # The example layout files are venues too, with every place of the files and no event.
    examples = await session.execute(
        text(
            "SELECT v.slug, (SELECT count(*) FROM seats JOIN seat_rows r ON r.id = seats.row_id"
            " JOIN sections s ON s.id = r.section_id WHERE s.layout_id = l.id)"
            " + (SELECT coalesce(sum(capacity), 0) FROM ga_areas a WHERE a.layout_id = l.id)"
            " FROM venues v JOIN seating_layouts l ON l.venue_id = v.id"
            " WHERE v.slug IN ('castlegate-theatre', 'meridian-arena')"
        )
    )
    assert dict(examples.all()) == {"castlegate-theatre": 2000, "meridian-arena": 20000}
    assert result.venues == 6


async def test_loading_twice_changes_nothing(session: AsyncSession) -> None:
    await load_demo(session)
    before = await _scalar(session, "SELECT count(*) FROM inventory_units")
    again = await load_demo(session)
    assert not again.loaded
    assert await _scalar(session, "SELECT count(*) FROM inventory_units") == before


async def test_two_concurrent_loads_load_once(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)

    async def load() -> bool:
        async with sessions() as session:
            return (await load_demo(session)).loaded

    results = await asyncio.gather(load(), load())
    assert sorted(results) == [False, True]
    async with sessions() as session:
        assert await _scalar(session, "SELECT count(*) FROM venues WHERE slug = 'harbour-arena'") == 1
