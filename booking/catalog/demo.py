"""Demo data: six venues and fourteen events, enough to try every part of Boxoffice.

The load is one transaction under an advisory lock, and skipped when the demo venue already
exists, so running it twice (or from two processes at once) loads it once.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.layout_file import Layout, read_layout
from booking.catalog.layouts import example_layouts, import_layout
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
from booking.catalog.search import refresh_all_search_documents
from booking.inventory.models import InventoryUnit

DEMO_MARKER_SLUG = "harbour-arena"
_LOCK_KEY = 0x0B0C_DE30  # pg_advisory_xact_lock key for the demo load


@dataclass(frozen=True)
class SectionSpec:
    name: str
    rows: int
    seats_per_row: int
    origin: tuple[float, float]
    # Row A's first and last seats are wheelchair places in sections that have them.
    accessible_front: bool = False


@dataclass(frozen=True)
class VenueSpec:
    slug: str
    name: str
    address: str
    city: str
    country: str
    latitude: float
    longitude: float
    timezone: str
    currency: str
    layout: str
    sections: tuple[SectionSpec, ...]
    ga_areas: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class EventSpec:
    slug: str
    title: str
    performer: str
    category: Category
    venue: str
    days_ahead: int
    description: str
    # Tier name -> (price in minor units, sections or GA areas it sells).
    tiers: tuple[tuple[str, int, tuple[str, ...]], ...]
    # None: on sale now. A number: the sale opens that many days from now.
    onsale_in_days: int | None = None


@dataclass(frozen=True)
class DemoResult:
    loaded: bool
    venues: int
    events: int
    units: int


VENUES: tuple[VenueSpec, ...] = (
    VenueSpec(
        slug=DEMO_MARKER_SLUG,
        name="Harbour Arena",
        address="1 Dock Road",
        city="London",
        country="GB",
        latitude=51.5030,
        longitude=0.0032,
        timezone="Europe/London",
        currency="GBP",
        layout="Concert",
        sections=(
            SectionSpec("Stalls Left", 20, 14, (0, 200), accessible_front=True),
            SectionSpec("Stalls Centre", 20, 30, (160, 200), accessible_front=True),
            SectionSpec("Stalls Right", 20, 14, (480, 200), accessible_front=True),
            SectionSpec("Circle", 12, 40, (40, 440)),
            SectionSpec("Balcony", 10, 40, (40, 600)),
        ),
        ga_areas=(("Standing Floor", 1000),),
    ),
    VenueSpec(
        slug="the-foundry",
        name="The Foundry",
        address="22 Mill Street",
        city="Manchester",
        country="GB",
        latitude=53.4808,
        longitude=-2.2426,
        timezone="Europe/London",
        currency="GBP",
        layout="Club",
        sections=(SectionSpec("Mezzanine", 4, 20, (40, 300), accessible_front=True),),
        ga_areas=(("Main Floor", 800),),
    ),
    VenueSpec(
        slug="riverside-theatre",
        name="Riverside Theatre",
        address="9 Quay Walk",
        city="Dublin",
        country="IE",
        latitude=53.3463,
        longitude=-6.2672,
        timezone="Europe/Dublin",
        currency="EUR",
        layout="Proscenium",
        sections=(
            SectionSpec("Stalls", 15, 24, (20, 100), accessible_front=True),
            SectionSpec("Dress Circle", 8, 24, (20, 300)),
        ),
        ga_areas=(),
    ),
    VenueSpec(
        slug="kulturhalle",
        name="Kulturhalle",
        address="Spreeufer 5",
        city="Berlin",
        country="DE",
        latitude=52.5125,
        longitude=13.4200,
        timezone="Europe/Berlin",
        currency="EUR",
        layout="Standing",
        sections=(),
        ga_areas=(("Hall", 1500),),
    ),
)

_ARENA_TIERS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("Stalls Centre", 8500, ("Stalls Centre",)),
    ("Stalls Sides", 6500, ("Stalls Left", "Stalls Right")),
    ("Circle", 4800, ("Circle",)),
    ("Balcony", 3200, ("Balcony",)),
    ("Standing", 5500, ("Standing Floor",)),
)

EVENTS: tuple[EventSpec, ...] = (
    EventSpec(
        "aurora-lights-london",
        "Aurora Lights: Northern Tour",
        "Aurora Lights",
        Category.MUSIC,
        DEMO_MARKER_SLUG,
        21,
        "Synth-pop trio on their first arena tour.",
        _ARENA_TIERS,
    ),
    EventSpec(
        "the-static-hearts-london",
        "The Static Hearts",
        "The Static Hearts",
        Category.MUSIC,
        DEMO_MARKER_SLUG,
        45,
        "Guitar rock, loud and late.",
        _ARENA_TIERS,
        onsale_in_days=7,
    ),
    EventSpec(
        "city-derby-basketball",
        "City Derby: Docklands vs Riverside",
        "Docklands Dockers",
        Category.SPORTS,
        DEMO_MARKER_SLUG,
        12,
        "The season's biggest basketball game.",
        (
            ("Courtside", 12000, ("Stalls Centre",)),
            ("Lower Tier", 4500, ("Stalls Left", "Stalls Right")),
            ("Upper Tier", 2500, ("Circle", "Balcony")),
        ),
    ),
    EventSpec(
        "london-philharmonic-mahler",
        "Mahler 2: Resurrection",
        "London Philharmonic Players",
        Category.CLASSICAL,
        DEMO_MARKER_SLUG,
        60,
        "Choir and orchestra, ninety minutes, no interval.",
        (
            ("Premium", 9500, ("Stalls Centre",)),
            ("Standard", 5500, ("Stalls Left", "Stalls Right", "Circle")),
            ("Restricted View", 2000, ("Balcony",)),
        ),
    ),
    EventSpec(
        "ice-dreams-family",
        "Ice Dreams on Tour",
        "Ice Dreams Company",
        Category.FAMILY,
        DEMO_MARKER_SLUG,
        90,
        "An ice show for all ages.",
        _ARENA_TIERS[:4],
        onsale_in_days=21,
    ),
    EventSpec(
        "mara-quinn-manchester",
        "Mara Quinn Live",
        "Mara Quinn",
        Category.MUSIC,
        "the-foundry",
        9,
        "Singer-songwriter, full band.",
        (("Main Floor", 3000, ("Main Floor",)), ("Mezzanine", 4500, ("Mezzanine",))),
    ),
    EventSpec(
        "late-laughs-manchester",
        "Late Laughs",
        "Dev Patel-Okafor",
        Category.COMEDY,
        "the-foundry",
        16,
        "Stand-up, strictly 18+.",
        (("Main Floor", 2200, ("Main Floor",)), ("Mezzanine", 2800, ("Mezzanine",))),
    ),
    EventSpec(
        "bassline-festival-manchester",
        "Bassline All-Dayer",
        "Various Artists",
        Category.FESTIVAL,
        "the-foundry",
        75,
        "Twelve hours of drum and bass.",
        (("Day Ticket", 4000, ("Main Floor",)),),
        onsale_in_days=14,
    ),
    EventSpec(
        "hamlet-dublin",
        "Hamlet",
        "Riverside Repertory",
        Category.THEATRE,
        "riverside-theatre",
        18,
        "Shakespeare in modern dress.",
        (("Stalls", 4500, ("Stalls",)), ("Dress Circle", 3500, ("Dress Circle",))),
    ),
    EventSpec(
        "the-gruffalo-dublin",
        "The Gruffalo",
        "Tall Stories",
        Category.FAMILY,
        "riverside-theatre",
        30,
        "The much-loved story on stage.",
        (("Stalls", 1800, ("Stalls",)), ("Dress Circle", 1500, ("Dress Circle",))),
    ),
    EventSpec(
        "ideas-night-dublin",
        "Ideas Night: Cities After Cars",
        "Dr. Niamh Walsh",
        Category.TALK,
        "riverside-theatre",
        40,
        "A talk and Q&A on car-free cities.",
        (("Stalls", 1500, ("Stalls",)), ("Dress Circle", 1200, ("Dress Circle",))),
    ),
    EventSpec(
        "nachtwerk-berlin",
        "Nachtwerk",
        "Nachtwerk",
        Category.MUSIC,
        "kulturhalle",
        25,
        "Techno live set, doors 22:00.",
        (("Hall", 3900, ("Hall",)),),
    ),
    EventSpec(
        "kabarett-berlin",
        "Kabarett am Ufer",
        "Lena Brandt",
        Category.COMEDY,
        "kulturhalle",
        33,
        "Political cabaret (in German).",
        (("Hall", 2500, ("Hall",)),),
    ),
    EventSpec(
        "berlin-summer-festival",
        "Spree Summer Festival",
        "Various Artists",
        Category.FESTIVAL,
        "kulturhalle",
        150,
        "Two stages, one weekend.",
        (("Weekend", 9900, ("Hall",)),),
        onsale_in_days=30,
    ),
)


def _row_label(index: int) -> str:
    """A, B, ... Z, AA, AB, ... as printed on seat backs."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


async def _load_venue(
    session: AsyncSession, spec: VenueSpec
) -> tuple[uuid.UUID, uuid.UUID, dict[str, uuid.UUID], dict[str, tuple[uuid.UUID, int]]]:
    venue_id = await session.scalar(
        insert(Venue)
        .values(
            slug=spec.slug,
            name=spec.name,
            address=spec.address,
            city=spec.city,
            country=spec.country,
            latitude=spec.latitude,
            longitude=spec.longitude,
            timezone=spec.timezone,
        )
        .returning(Venue.id)
    )
    layout_id = await session.scalar(
        insert(SeatingLayout).values(venue_id=venue_id, name=spec.layout).returning(SeatingLayout.id)
    )
    sections: dict[str, uuid.UUID] = {}
    for order, section in enumerate(spec.sections):
        section_id = await session.scalar(
            insert(Section)
            .values(layout_id=layout_id, name=section.name, sort_order=order)
            .returning(Section.id)
        )
        assert section_id is not None
        sections[section.name] = section_id
        row_ids = (
            await session.scalars(
                insert(SeatRow).returning(SeatRow.id, sort_by_parameter_order=True),
                [
                    {"section_id": section_id, "label": _row_label(r), "sort_order": r}
                    for r in range(section.rows)
                ],
            )
        ).all()
        ox, oy = section.origin
        await session.execute(
            insert(Seat),
            [
                {
                    "row_id": row_id,
                    "number": str(n + 1),
                    "x": ox + n * 10.0,
                    "y": oy + r * 10.0,
                    "accessible": section.accessible_front and r == 0 and n in (0, section.seats_per_row - 1),
                    "sort_order": n,
                }
                for r, row_id in enumerate(row_ids)
                for n in range(section.seats_per_row)
            ],
        )
    areas: dict[str, tuple[uuid.UUID, int]] = {}
    for name, capacity in spec.ga_areas:
        area_id = await session.scalar(
            insert(GAArea).values(layout_id=layout_id, name=name, capacity=capacity).returning(GAArea.id)
        )
        assert area_id is not None
        areas[name] = (area_id, capacity)
    assert venue_id is not None
    assert layout_id is not None
    return venue_id, layout_id, sections, areas


async def _load_event(
    session: AsyncSession,
    spec: EventSpec,
    venue: VenueSpec,
    ids: tuple[uuid.UUID, uuid.UUID, dict[str, uuid.UUID], dict[str, tuple[uuid.UUID, int]]],
    now: dt.datetime,
) -> None:
    venue_id, layout_id, sections, areas = ids
    zone = ZoneInfo(venue.timezone)
    day = (now.astimezone(zone) + dt.timedelta(days=spec.days_ahead)).date()
    starts_at = dt.datetime.combine(day, dt.time(19, 30), tzinfo=zone)
    onsale_starts_at = (
        now - dt.timedelta(days=7)
        if spec.onsale_in_days is None
        else (now + dt.timedelta(days=spec.onsale_in_days))
    )
    event_id = await session.scalar(
        insert(Event)
        .values(
            slug=spec.slug,
            title=spec.title,
            performer=spec.performer,
            description=spec.description,
            category=spec.category,
            venue_id=venue_id,
            layout_id=layout_id,
            city=venue.city,
            timezone=venue.timezone,
            starts_at=starts_at,
            ends_at=starts_at + dt.timedelta(hours=3),
            onsale_starts_at=onsale_starts_at,
            onsale_ends_at=starts_at,
            status=EventStatus.ON_SALE,
        )
        .returning(Event.id)
    )
    for order, (tier_name, price, places) in enumerate(spec.tiers):
        ga_places = [areas[p] for p in places if p in areas]
        tier_id = await session.scalar(
            insert(PriceTier)
            .values(
                event_id=event_id,
                name=tier_name,
                price_minor=price,
                currency=venue.currency,
                ga_area_id=ga_places[0][0] if ga_places else None,
                sort_order=order,
            )
            .returning(PriceTier.id)
        )
        section_ids = [sections[p] for p in places if p in sections]
        if section_ids:
            await session.execute(
                text(
                    "INSERT INTO inventory_units (event_id, price_tier_id, seat_id)"
                    " SELECT :event_id, :tier_id, seats.id FROM seats"
                    " JOIN seat_rows ON seat_rows.id = seats.row_id"
                    " WHERE seat_rows.section_id = ANY(:section_ids)"
                ),
                {"event_id": event_id, "tier_id": tier_id, "section_ids": section_ids},
            )
        for area_id, capacity in ga_places:
            await session.execute(
                text(
                    "INSERT INTO inventory_units (event_id, price_tier_id, ga_area_id)"
                    " SELECT :event_id, :tier_id, :area_id FROM generate_series(1, :capacity)"
                ),
                {"event_id": event_id, "tier_id": tier_id, "area_id": area_id, "capacity": capacity},
            )


@functools.lru_cache(maxsize=8)
def _example(path: Path, mtime_ns: int, size: int) -> Layout:
    """An example layout file, read once a process while it stays the same file (the test
    suite loads the demo many times)."""
    del mtime_ns, size  # part of the cache key only
    return read_layout(path)


async def load_demo(session: AsyncSession) -> DemoResult:
    """Load the demo venues and events unless they are already there; commits.

    Dates are relative to the database clock at load time, so a fresh demo always has events
    on sale now and events whose sale opens later.
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    exists = await session.scalar(select(Venue.id).where(Venue.slug == DEMO_MARKER_SLUG))
    if exists is not None:
        await session.rollback()
        return DemoResult(loaded=False, venues=0, events=0, units=0)
    now = await session.scalar(select(func.now()))
    assert now is not None
    venue_ids = {spec.slug: await _load_venue(session, spec) for spec in VENUES}
    # The example layout files (a theatre and an arena) are venues to look at and build
    # events on, but carry no event: one on the arena would be 20,000 more units for every
    # test that loads the demo.
    examples = example_layouts()
    for path in examples:
        stat = path.stat()
        await import_layout(session, _example(path, stat.st_mtime_ns, stat.st_size))
    by_slug = {spec.slug: spec for spec in VENUES}
    for event in EVENTS:
        await _load_event(session, event, by_slug[event.venue], venue_ids[event.venue], now)
    # Written in the same transaction, so the demo is searchable the moment it is visible.
    await refresh_all_search_documents(session)
    units = await session.scalar(select(func.count()).select_from(InventoryUnit))
    await session.commit()
    venues = len(VENUES) + len(examples)
    return DemoResult(loaded=True, venues=venues, events=len(EVENTS), units=int(units or 0))
