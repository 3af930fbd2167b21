"""Price tiers: which seats and standing places each one sells, checked to price a layout's
every place exactly once, and the event's inventory units made from them in bulk.

A tier sells either seats (whole sections, rows of a section, single seats by id, in any mix)
or places of one general-admission area (all of its capacity, or ``quantity`` of it, so two
tiers can share an area: an early-bird allotment and the rest). The rule an event must meet to
go on sale, and that every set of tiers is checked against, is that each seat of the layout
is sold by exactly one tier and each area's capacity is split among its tiers exactly.

The check and the units are computed inside PostgreSQL from the tiers' rules (a few small
arrays): a 20,000-seat layout never travels to Python, and its units are one
``INSERT ... SELECT`` over the layout's seats.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import GAArea, PriceTier, Seat, SeatingLayout, SeatRow, Section
from booking.errors import TiersInvalid
from booking.inventory.models import InventoryUnit

MAX_TIERS = 50
MAX_TIER_NAME = 120
# Prices are bigint minor units; bounding them keeps a typo from overflowing the column.
MAX_PRICE_MINOR = 10**12
# More single seats than this in one tier is a layout's job (sections and rows), not a list.
MAX_SEAT_IDS = 5000
MAX_ROWS = 1000


@dataclass(frozen=True)
class RowRef:
    section: str
    row: str


@dataclass(frozen=True)
class TierSpec:
    """One tier as an organiser writes it: a name, a price, and what it sells (see the
    module's docstring). Names are the layout's own (section names, row labels)."""

    name: str
    price_minor: int
    sections: tuple[str, ...] = ()
    rows: tuple[RowRef, ...] = ()
    seat_ids: tuple[int, ...] = ()
    ga_area: str | None = None
    quantity: int | None = None


@dataclass(frozen=True)
class LayoutPlaces:
    """What a layout has to sell, by the names tiers use."""

    layout_id: uuid.UUID
    name: str
    sections: dict[str, uuid.UUID]
    rows: dict[tuple[str, str], uuid.UUID]
    areas: dict[str, tuple[uuid.UUID, int]]
    seats: int

    @property
    def places(self) -> int:
        return self.seats + sum(capacity for _, capacity in self.areas.values())


@dataclass
class _Rules:
    """Each tier's seat rules as the parallel arrays the SQL unnests; ``ord`` is the tier's
    1-based position in the plan."""

    section_ords: list[int] = field(default_factory=list)
    section_ids: list[uuid.UUID] = field(default_factory=list)
    row_ords: list[int] = field(default_factory=list)
    row_ids: list[uuid.UUID] = field(default_factory=list)
    seat_ords: list[int] = field(default_factory=list)
    seat_ids: list[int] = field(default_factory=list)

    def params(self) -> dict[str, object]:
        return {
            "sec_ords": self.section_ords,
            "sec_ids": self.section_ids,
            "row_ords": self.row_ords,
            "row_ids": self.row_ids,
            "seat_ords": self.seat_ords,
            "seat_ids": self.seat_ids,
        }


@dataclass(frozen=True)
class TierPlan:
    """Tiers checked against a layout, ready to install."""

    layout: LayoutPlaces
    tiers: tuple[TierSpec, ...]
    rules: _Rules
    # Per GA tier (by position): its area and how many of its places.
    ga: dict[int, tuple[uuid.UUID, int]]


async def layout_places(session: AsyncSession, layout_id: uuid.UUID) -> LayoutPlaces:
    """The layout's sections, rows and areas by name, and how many seats it has."""
    name = await session.scalar(select(SeatingLayout.name).where(SeatingLayout.id == layout_id))
    sections = {
        row.name: row.id
        for row in await session.execute(
            select(Section.id, Section.name).where(Section.layout_id == layout_id)
        )
    }
    rows = {
        (row.section, row.label): row.id
        for row in await session.execute(
            select(SeatRow.id, SeatRow.label, Section.name.label("section"))
            .join(Section, Section.id == SeatRow.section_id)
            .where(Section.layout_id == layout_id)
        )
    }
    areas = {
        row.name: (row.id, row.capacity)
        for row in await session.execute(
            select(GAArea.id, GAArea.name, GAArea.capacity).where(GAArea.layout_id == layout_id)
        )
    }
    seats = await session.scalar(
        select(func.count(Seat.id))
        .join(SeatRow, SeatRow.id == Seat.row_id)
        .join(Section, Section.id == SeatRow.section_id)
        .where(Section.layout_id == layout_id)
    )
    return LayoutPlaces(layout_id, str(name), sections, rows, areas, int(seats or 0))


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in sorted(names)[:12])
    return shown + (", ..." if len(names) > 12 else "") if names else "none"


def _resolve(
    layout: LayoutPlaces, tiers: Sequence[TierSpec]
) -> tuple[_Rules, dict[int, tuple[uuid.UUID, int]], list[str]]:
    """Turn the tiers' names into the layout's ids; the problems found on the way."""
    problems: list[str] = []
    rules = _Rules()
    ga: dict[int, tuple[uuid.UUID, int]] = {}
    if not tiers:
        problems.append("give at least one tier")
    if len(tiers) > MAX_TIERS:
        problems.append(f"at most {MAX_TIERS} tiers")
    seen: set[str] = set()
    for ord_, tier in enumerate(tiers, start=1):
        label = f"tier {tier.name!r}"
        if not tier.name.strip() or len(tier.name) > MAX_TIER_NAME:
            problems.append(f"tier {ord_}: a name of 1 to {MAX_TIER_NAME} characters")
        if tier.name in seen:
            problems.append(f"{label} is named twice: tier names are unique within an event")
        seen.add(tier.name)
        if not 0 <= tier.price_minor <= MAX_PRICE_MINOR:
            problems.append(f"{label}: the price is 0 to {MAX_PRICE_MINOR} minor units")
        seated = bool(tier.sections or tier.rows or tier.seat_ids)
        if tier.ga_area is not None and seated:
            problems.append(f"{label} sells both seats and GA area {tier.ga_area!r}: make them two tiers")
            continue
        if tier.ga_area is None and not seated:
            problems.append(f"{label} sells nothing: give sections, rows, seat_ids or a ga_area")
            continue
        if tier.ga_area is None and tier.quantity is not None:
            problems.append(f"{label}: a quantity is for a GA area's tier only")
        if len(tier.seat_ids) > MAX_SEAT_IDS or len(tier.rows) > MAX_ROWS:
            problems.append(
                f"{label}: at most {MAX_SEAT_IDS} seat ids and {MAX_ROWS} rows; name sections instead"
            )
            continue
        if tier.ga_area is not None:
            area = layout.areas.get(tier.ga_area)
            if area is None:
                problems.append(
                    f"{label}: layout {layout.name!r} has no GA area {tier.ga_area!r}"
                    f" (its areas: {_listed(list(layout.areas))})"
                )
                continue
            quantity = area[1] if tier.quantity is None else tier.quantity
            if not 1 <= quantity <= area[1]:
                problems.append(f"{label}: a quantity of 1 to {area[1]} places of {tier.ga_area!r}")
                continue
            ga[ord_] = (area[0], quantity)
            continue
        for section in tier.sections:
            section_id = layout.sections.get(section)
            if section_id is None:
                problems.append(
                    f"{label}: layout {layout.name!r} has no section {section!r}"
                    f" (its sections: {_listed(list(layout.sections))})"
                )
                continue
            rules.section_ords.append(ord_)
            rules.section_ids.append(section_id)
        for ref in tier.rows:
            row_id = layout.rows.get((ref.section, ref.row))
            if row_id is None:
                where = "section" if ref.section in layout.sections else "layout section"
                problems.append(f"{label}: {where} {ref.section!r} has no row {ref.row!r}")
                continue
            rules.row_ords.append(ord_)
            rules.row_ids.append(row_id)
        for seat_id in dict.fromkeys(tier.seat_ids):
            rules.seat_ords.append(ord_)
            rules.seat_ids.append(seat_id)
    return rules, ga, problems


# The layout's seats and, for each, the tiers whose rules reach it: by whole section, by
# row, by seat id. UNION (not UNION ALL): a tier that names a section and a row of it still
# prices each of those seats once.
_COVER = """
    sec AS (SELECT * FROM unnest(CAST(:sec_ords AS integer[]), CAST(:sec_ids AS uuid[])) AS r(ord, id)),
    rws AS (SELECT * FROM unnest(CAST(:row_ords AS integer[]), CAST(:row_ids AS uuid[])) AS r(ord, id)),
    one AS (SELECT * FROM unnest(CAST(:seat_ords AS integer[]), CAST(:seat_ids AS bigint[])) AS r(ord, id)),
    places AS (
        SELECT s.id, s.row_id, sr.section_id FROM seats s
        JOIN seat_rows sr ON sr.id = s.row_id JOIN sections sc ON sc.id = sr.section_id
        WHERE sc.layout_id = :layout_id
    ),
    cover AS (
        SELECT r.ord, p.id FROM sec r JOIN places p ON p.section_id = r.id
        UNION SELECT r.ord, p.id FROM rws r JOIN places p ON p.row_id = r.id
        UNION SELECT r.ord, p.id FROM one r JOIN places p ON p.id = r.id
    )"""

# Seats priced by no tier or by several, grouped by section and by which tiers: a few lines
# an organiser can act on, however many seats are wrong.
_CHECK_SQL = (
    "WITH"  # noqa: S608 (constants, made at import)
    + _COVER
    + """,
    per_seat AS (
        SELECT p.id, array_agg(c.ord ORDER BY c.ord) FILTER (WHERE c.ord IS NOT NULL) AS ords
        FROM places p LEFT JOIN cover c ON c.id = p.id GROUP BY p.id
    )
    SELECT sc.name, ps.ords, count(*) AS seats,
           (array_agg(DISTINCT sr.label))[1:8] AS rows,
           (array_agg(s.number ORDER BY length(s.number), s.number))[1:6] AS numbers
    FROM per_seat ps JOIN seats s ON s.id = ps.id JOIN seat_rows sr ON sr.id = s.row_id
    JOIN sections sc ON sc.id = sr.section_id
    WHERE coalesce(cardinality(ps.ords), 0) <> 1
    GROUP BY sc.sort_order, sc.name, ps.ords
    ORDER BY sc.sort_order, sc.name
    LIMIT 20
"""
)

_FOREIGN_SEATS_SQL = """
    SELECT t.x FROM unnest(CAST(:seat_ids AS bigint[])) AS t(x)
    WHERE NOT EXISTS (
        SELECT 1 FROM seats s JOIN seat_rows sr ON sr.id = s.row_id JOIN sections sc ON sc.id = sr.section_id
        WHERE s.id = t.x AND sc.layout_id = :layout_id
    )
    ORDER BY t.x LIMIT 10
"""

_SEAT_UNITS_SQL = (
    "WITH"  # noqa: S608 (constants, made at import)
    + _COVER
    + """
    INSERT INTO inventory_units (event_id, price_tier_id, seat_id)
    SELECT :event_id, (CAST(:tier_ids AS uuid[]))[c.ord], c.id FROM cover c
"""
)

_GA_UNITS_SQL = """
    INSERT INTO inventory_units (event_id, price_tier_id, ga_area_id)
    SELECT :event_id, g.tier_id, g.area_id
    FROM unnest(CAST(:tier_ids AS uuid[]), CAST(:area_ids AS uuid[]), CAST(:quantities AS integer[]))
         AS g(tier_id, area_id, quantity),
         generate_series(1, g.quantity)
"""


def _seats_problem(
    tiers: Sequence[TierSpec],
    section: str,
    ords: list[int] | None,
    count: int,
    rows: list[str],
    numbers: list[str],
) -> str:
    seats = f"{count} seat{'s' if count != 1 else ''} of section {section!r}"
    where = (
        f"row {rows[0]}: seats {', '.join(numbers)}{', ...' if count > len(numbers) else ''}"
        if len(rows) == 1
        else f"rows {', '.join(sorted(rows))}{', ...' if len(rows) >= 8 else ''}"
    )
    if not ords:
        return f"{seats} are priced by no tier ({where})"
    names = " and ".join(repr(tiers[o - 1].name) for o in ords)
    return f"{seats} are priced by more than one tier, {names} ({where})"


async def plan_tiers(session: AsyncSession, layout: LayoutPlaces, tiers: Sequence[TierSpec]) -> TierPlan:
    """Check ``tiers`` against the layout: every seat priced by exactly one tier, every GA
    area's capacity split exactly among its tiers, every name known.

    Raises:
        TiersInvalid: with every problem found (unknown names, seats priced twice or not
            at all, an area's places not adding up...).
    """
    tiers = tuple(tiers)
    rules, ga, problems = _resolve(layout, tiers)
    if layout.places == 0:
        problems.append(f"layout {layout.name!r} has no seat and no GA area to sell")
    if rules.seat_ids:
        foreign = (
            await session.scalars(
                text(_FOREIGN_SEATS_SQL), {"seat_ids": rules.seat_ids, "layout_id": layout.layout_id}
            )
        ).all()
        if foreign:
            problems.append(f"seats {', '.join(map(str, foreign))} are not seats of layout {layout.name!r}")
    if layout.seats:
        params = {**rules.params(), "layout_id": layout.layout_id}
        for section, ords, count, rows, numbers in await session.execute(text(_CHECK_SQL), params):
            problems.append(_seats_problem(tiers, section, ords, int(count), list(rows), list(numbers)))
    sold: dict[uuid.UUID, int] = defaultdict(int)
    for area_id, quantity in ga.values():
        sold[area_id] += quantity
    for name, (area_id, capacity) in sorted(layout.areas.items()):
        if sold[area_id] != capacity:
            problems.append(f"GA area {name!r} has {capacity} places and its tiers sell {sold[area_id]}")
    if problems:
        raise TiersInvalid(problems)
    return TierPlan(layout, tiers, rules, ga)


@dataclass(frozen=True)
class Installed:
    tier_ids: tuple[uuid.UUID, ...]
    units: int


async def install_tiers(
    session: AsyncSession, event_id: uuid.UUID, currency: str, plan: TierPlan
) -> Installed:
    """Replace the event's tiers and units with ``plan``'s, in the caller's transaction: one
    statement for the tiers, one for every seat's unit, one for every GA place's. The caller
    makes sure nothing was ever held of the event (holds and orders name units and tiers)."""
    await session.execute(delete(InventoryUnit).where(InventoryUnit.event_id == event_id))
    await session.execute(delete(PriceTier).where(PriceTier.event_id == event_id))
    tier_ids = tuple(
        (
            await session.scalars(
                insert(PriceTier).returning(PriceTier.id, sort_by_parameter_order=True),
                [
                    {
                        "event_id": event_id,
                        "name": tier.name,
                        "price_minor": tier.price_minor,
                        "currency": currency,
                        "ga_area_id": plan.ga[ord_][0] if ord_ in plan.ga else None,
                        "sort_order": ord_,
                    }
                    for ord_, tier in enumerate(plan.tiers, start=1)
                ],
            )
        ).all()
    )
    units = 0
    if plan.layout.seats:
        result = await session.execute(
            text(_SEAT_UNITS_SQL),
            {
                **plan.rules.params(),
                "layout_id": plan.layout.layout_id,
                "event_id": event_id,
                "tier_ids": list(tier_ids),
            },
        )
        units += int(result.rowcount or 0)  # type: ignore[attr-defined]
    if plan.ga:
        ga = sorted(plan.ga.items())
        result = await session.execute(
            text(_GA_UNITS_SQL),
            {
                "event_id": event_id,
                "tier_ids": [tier_ids[ord_ - 1] for ord_, _ in ga],
                "area_ids": [area_id for _, (area_id, _) in ga],
                "quantities": [quantity for _, (_, quantity) in ga],
            },
        )
        units += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return Installed(tier_ids, units)


# Whether the event's units are still its layout's places exactly once: the layout may have
# changed since the tiers were set (a layout file imported again, seats added).
_READINESS_SQL = """
    SELECT
      (SELECT count(*) FROM seats s JOIN seat_rows sr ON sr.id = s.row_id
        JOIN sections sc ON sc.id = sr.section_id
        WHERE sc.layout_id = e.layout_id
          AND NOT EXISTS (SELECT 1 FROM inventory_units u WHERE u.event_id = e.id AND u.seat_id = s.id)),
      (SELECT count(*) FROM inventory_units u WHERE u.event_id = e.id AND u.seat_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM seats s JOIN seat_rows sr ON sr.id = s.row_id
          JOIN sections sc ON sc.id = sr.section_id WHERE s.id = u.seat_id AND sc.layout_id = e.layout_id)),
      (SELECT coalesce(array_agg(a.name ORDER BY a.name), '{}') FROM ga_areas a
        WHERE a.layout_id = e.layout_id AND a.capacity <> (
          SELECT count(*) FROM inventory_units u WHERE u.event_id = e.id AND u.ga_area_id = a.id)),
      (SELECT count(*) FROM price_tiers t WHERE t.event_id = e.id),
      (SELECT count(DISTINCT t.currency) FROM price_tiers t WHERE t.event_id = e.id)
    FROM events e WHERE e.id = :event_id
"""


async def coverage_problems(session: AsyncSession, event_id: uuid.UUID) -> list[str]:
    """What keeps the event's units from being its layout's places exactly once, in words;
    empty when nothing does."""
    row = (await session.execute(text(_READINESS_SQL), {"event_id": event_id})).one()
    unpriced, foreign, areas, tiers, currencies = row
    if tiers == 0:
        return ["it has no price tiers: set them first"]
    problems = []
    if unpriced:
        problems.append(f"{unpriced} seats of its layout have no ticket: set the tiers again")
    if foreign:
        problems.append(f"{foreign} of its seats are no longer in its layout: set the tiers again")
    if areas:
        problems.append(
            f"GA areas {', '.join(map(repr, areas))} do not match their tiers: set the tiers again"
        )
    if currencies > 1:
        problems.append("its tiers are priced in more than one currency")
    return problems


async def layout_tiers(
    session: AsyncSession, layout_id: uuid.UUID, prices: Mapping[str, int]
) -> tuple[TierSpec, ...]:
    """Tiers from the tiers a layout declares (a layout file's ``tiers``, each row and GA area
    naming one): one tier per declared name with its seats, and one per GA area it names
    (called after the tier, or ``TIER · AREA`` when the tier has seats or several areas too),
    priced from ``prices`` by declared name. A row or area the layout left without a tier is
    priced by none, which ``plan_tiers`` then reports.

    Raises:
        TiersInvalid: a price for a tier the layout does not declare, or a declared tier
            with places and no price.
    """
    declared = list(
        await session.scalar(select(SeatingLayout.tiers).where(SeatingLayout.id == layout_id)) or []
    )
    rows: dict[str, list[RowRef]] = defaultdict(list)
    for tier, section, label in await session.execute(
        select(SeatRow.tier, Section.name, SeatRow.label)
        .join(Section, Section.id == SeatRow.section_id)
        .where(Section.layout_id == layout_id, SeatRow.tier.is_not(None))
        .order_by(Section.sort_order, Section.name, SeatRow.sort_order, SeatRow.label)
    ):
        rows[str(tier)].append(RowRef(section, label))
    areas: dict[str, list[str]] = defaultdict(list)
    for tier, name in await session.execute(
        select(GAArea.tier, GAArea.name)
        .where(GAArea.layout_id == layout_id, GAArea.tier.is_not(None))
        .order_by(GAArea.sort_order, GAArea.name)
    ):
        areas[str(tier)].append(name)
    problems = [
        f"the layout declares no tier {name!r} (its tiers: {_listed(declared)})"
        for name in prices
        if name not in declared
    ]
    problems += [
        f"give a price for the layout's tier {name!r}"
        for name in declared
        if (rows.get(name) or areas.get(name)) and name not in prices
    ]
    if problems:
        raise TiersInvalid(problems)
    specs: list[TierSpec] = []
    for name in declared:
        if name not in prices:
            continue
        if rows.get(name):
            specs.append(TierSpec(name, prices[name], rows=tuple(rows[name])))
        alone = not rows.get(name) and len(areas.get(name, [])) == 1
        specs += [
            TierSpec(name if alone else f"{name} · {area}", prices[name], ga_area=area)
            for area in areas.get(name, [])
        ]
    return tuple(specs)
