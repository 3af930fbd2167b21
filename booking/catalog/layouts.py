"""Venues and their seating layouts as files: validate, import, export.

A layout file (``booking.catalog.layout_file``; the format is in docs/catalog.md) describes a
venue and one of its layouts. ``import_layout`` makes the database say what the file says:

- The venue is found by its slug, the layout by its name within the venue; sections and GA
  areas by name, rows by label within their section, seats by number within their row. A row
  whose label is new takes the place of the row at the same position in its section whose
  label is gone from the file: that is a rename, and its seats keep their identity (and
  whatever events sell or sold them).
- Importing the same file twice changes nothing the second time (and says so).
- A change that would remove a seat that any event has held or sold, now or before (a hold,
  an order, a ticket names it), or a GA area any event sells, is refused whole, naming them:
  nothing is changed. A removed seat that events only offer (available or blocked, never
  held) leaves those events' inventory with it.
- Added seats and GA capacity are the layout's: events already created on it keep their
  inventory as it is (an event's units are made when the event is), and the result says how
  many such events there are.

Everything happens in the caller's transaction (the caller commits, with its audit row);
imports of one venue are serialised by a transaction-scoped advisory lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.layout_file import (
    Layout,
    LayoutArea,
    LayoutRow,
    LayoutSeat,
    LayoutSection,
    LayoutVenue,
    dump_layout,
)
from booking.catalog.layout_geometry import RowMap, SectionMap, SpecError
from booking.catalog.models import Event, GAArea, Seat, SeatingLayout, SeatRow, Section, Venue
from booking.catalog.search import refresh_search_documents
from booking.errors import LayoutChangeRefused, LayoutInvalid, LayoutNotFound, VenueNotFound
from booking.inventory.models import InventoryUnit

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
MAX_CHANGE_LINES = 200
_VENUE_FIELDS = ("name", "address", "city", "country", "latitude", "longitude", "timezone")

Change = Literal["created", "updated", "unchanged"]


def example_layouts() -> list[Path]:
    """The example layout files shipped with Boxoffice (docs/layouts in a source checkout,
    ``booking/_layouts`` in a wheel), in name order."""
    for folder in (_PACKAGE_DIR / "_layouts", _PACKAGE_DIR.parent / "docs" / "layouts"):
        if folder.is_dir():
            return sorted(folder.glob("*.yaml"))
    return []


@dataclass(frozen=True)
class ImportResult:
    """What an import did (or, with ``dry_run``, would do). ``changes`` are lines for people
    (at most ``MAX_CHANGE_LINES``); ``counts`` the same for scripts, by kind and change.
    ``events`` counts the events on this layout, which keep their inventory as it was except
    for seats removed."""

    venue: str
    layout: str
    venue_id: uuid.UUID | None
    layout_id: uuid.UUID | None
    dry_run: bool
    changed: bool
    venue_change: Change
    layout_change: Change
    counts: dict[str, dict[str, int]]
    changes: list[str]
    seats: int
    ga_places: int
    places: int
    events: int


# --- what is stored --------------------------------------------------------------------------


@dataclass
class _Seat:
    id: int
    number: str
    sort_order: int
    x: float
    y: float
    accessible: bool
    companion: bool
    restricted_view: bool


@dataclass
class _Row:
    id: uuid.UUID
    label: str
    sort_order: int
    tier: str | None
    placement: dict[str, Any] | None
    seats: list[_Seat] = field(default_factory=list)


@dataclass
class _Section:
    id: uuid.UUID
    name: str
    sort_order: int
    placement: dict[str, Any] | None
    rows: list[_Row] = field(default_factory=list)


@dataclass
class _Area:
    id: uuid.UUID
    name: str
    capacity: int
    tier: str | None
    sort_order: int


@dataclass
class _Stored:
    layout_id: uuid.UUID
    tiers: list[str]
    sections: list[_Section]
    areas: list[_Area]


async def _stored(session: AsyncSession, layout_id: uuid.UUID, tiers: list[str]) -> _Stored:
    sections = {
        row.id: _Section(row.id, row.name, row.sort_order, row.placement)
        for row in (
            await session.execute(
                select(Section.id, Section.name, Section.sort_order, Section.placement)
                .where(Section.layout_id == layout_id)
                .order_by(Section.sort_order, Section.name)
            )
        ).all()
    }
    rows: dict[uuid.UUID, _Row] = {}
    for row in (
        await session.execute(
            select(
                SeatRow.id,
                SeatRow.section_id,
                SeatRow.label,
                SeatRow.sort_order,
                SeatRow.tier,
                SeatRow.placement,
            )
            .join(Section, Section.id == SeatRow.section_id)
            .where(Section.layout_id == layout_id)
            .order_by(SeatRow.sort_order, SeatRow.label)
        )
    ).all():
        rows[row.id] = _Row(row.id, row.label, row.sort_order, row.tier, row.placement)
        sections[row.section_id].rows.append(rows[row.id])
    seats = await session.execute(
        select(
            Seat.id,
            Seat.row_id,
            Seat.number,
            Seat.sort_order,
            Seat.x,
            Seat.y,
            Seat.accessible,
            Seat.companion,
            Seat.restricted_view,
        )
        .join(SeatRow, SeatRow.id == Seat.row_id)
        .join(Section, Section.id == SeatRow.section_id)
        .where(Section.layout_id == layout_id)
        .order_by(Seat.row_id, Seat.sort_order, Seat.id)
    )
    for seat in seats.all():
        rows[seat.row_id].seats.append(
            _Seat(
                seat.id,
                seat.number,
                seat.sort_order,
                seat.x,
                seat.y,
                seat.accessible,
                seat.companion,
                seat.restricted_view,
            )
        )
    areas = [
        _Area(row.id, row.name, row.capacity, row.tier, row.sort_order)
        for row in (
            await session.execute(
                select(GAArea.id, GAArea.name, GAArea.capacity, GAArea.tier, GAArea.sort_order)
                .where(GAArea.layout_id == layout_id)
                .order_by(GAArea.sort_order, GAArea.name)
            )
        ).all()
    ]
    return _Stored(layout_id, list(tiers), list(sections.values()), areas)


# --- the plan --------------------------------------------------------------------------------


def _n(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _numbers(numbers: Sequence[str]) -> str:
    shown = ", ".join(numbers[:8])
    return shown + (f" and {len(numbers) - 8} more" if len(numbers) > 8 else "")


def _seat_values(seat: LayoutSeat, sort_order: int) -> dict[str, Any]:
    return {
        "number": seat.number,
        "sort_order": sort_order,
        "x": seat.x,
        "y": seat.y,
        "accessible": seat.accessible,
        "companion": seat.companion,
        "restricted_view": seat.restricted_view,
    }


def _placement(value: SectionMap | RowMap | None) -> dict[str, Any] | None:
    return None if value is None else value.as_json()


@dataclass
class _Plan:
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {
            kind: {"added": 0, "updated": 0, "renamed": 0, "removed": 0}
            for kind in ("sections", "rows", "seats", "ga_areas")
        }
    )
    lines: list[str] = field(default_factory=list)
    section_adds: list[dict[str, Any]] = field(default_factory=list)
    section_updates: list[dict[str, Any]] = field(default_factory=list)
    section_removes: list[uuid.UUID] = field(default_factory=list)
    row_adds: list[dict[str, Any]] = field(default_factory=list)
    row_updates: list[dict[str, Any]] = field(default_factory=list)
    row_removes: list[uuid.UUID] = field(default_factory=list)
    seat_adds: list[dict[str, Any]] = field(default_factory=list)
    seat_updates: list[dict[str, Any]] = field(default_factory=list)
    # Seat id -> how people name it, for every seat the import removes (with its row or
    # section, or alone).
    seat_removes: dict[int, str] = field(default_factory=dict)
    area_adds: list[dict[str, Any]] = field(default_factory=list)
    area_updates: list[dict[str, Any]] = field(default_factory=list)
    area_removes: dict[uuid.UUID, str] = field(default_factory=dict)

    def count(self, kind: str, change: str, by: int = 1) -> None:
        self.counts[kind][change] += by

    @property
    def empty(self) -> bool:
        return not any(n for changes in self.counts.values() for n in changes.values())

    def add_row(
        self, section_id: uuid.UUID, section: str, row: LayoutRow, sort_order: int, *, alone: bool
    ) -> None:
        row_id = uuid.uuid4()
        self.row_adds.append(
            {
                "id": row_id,
                "section_id": section_id,
                "label": row.label,
                "sort_order": sort_order,
                "tier": row.tier,
                "placement": _placement(row.map),
            }
        )
        self.count("rows", "added")
        self.count("seats", "added", len(row.seats))
        self.seat_adds.extend({"row_id": row_id, **_seat_values(s, k)} for k, s in enumerate(row.seats))
        if alone:
            self.lines.append(f"row {row.label} of {section}: added ({_n(len(row.seats), 'seat')})")

    def remove_row(self, section: str, row: _Row, *, alone: bool) -> None:
        self.row_removes.append(row.id)
        self.count("rows", "removed")
        self.count("seats", "removed", len(row.seats))
        for seat in row.seats:
            self.seat_removes[seat.id] = f"{section} row {row.label} seat {seat.number}"
        if alone:
            self.lines.append(f"row {row.label} of {section}: removed ({_n(len(row.seats), 'seat')})")

    def seats(self, section: str, old: _Row, new: LayoutRow) -> None:
        stored = {seat.number: seat for seat in old.seats}
        added: list[str] = []
        updated: list[str] = []
        for sort_order, seat in enumerate(new.seats):
            before = stored.pop(seat.number, None)
            values = _seat_values(seat, sort_order)
            if before is None:
                self.seat_adds.append({"row_id": old.id, **values})
                added.append(seat.number)
                continue
            if any(getattr(before, key) != value for key, value in values.items()):
                self.seat_updates.append({"id": before.id, **values})
                updated.append(seat.number)
        removed = [gone.number for gone in stored.values()]
        for gone in stored.values():
            self.seat_removes[gone.id] = f"{section} row {new.label} seat {gone.number}"
        self.count("seats", "added", len(added))
        self.count("seats", "updated", len(updated))
        self.count("seats", "removed", len(removed))
        said = [
            f"{len(numbers)} {what} ({_numbers(numbers)})"
            for what, numbers in (("added", added), ("updated", updated), ("removed", removed))
            if numbers
        ]
        if said:
            self.lines.append(f"row {new.label} of {section}: seats {'; '.join(said)}")

    def rows(self, old: _Section, new: LayoutSection) -> None:
        by_label = {row.label: row for row in old.rows}
        labels = {row.label for row in new.rows}
        # Rows whose label is gone, by position: a new label at the same position renames one.
        gone = {index: row for index, row in enumerate(old.rows) if row.label not in labels}
        for sort_order, row in enumerate(new.rows):
            before = by_label.get(row.label)
            if before is None:
                before = gone.pop(sort_order, None)
                if before is None:
                    self.add_row(old.id, new.name, row, sort_order, alone=True)
                    continue
                self.count("rows", "renamed")
                self.lines.append(f"row {before.label} of {new.name}: renamed {row.label}")
            values = {
                "label": row.label,
                "sort_order": sort_order,
                "tier": row.tier,
                "placement": _placement(row.map),
            }
            changed = [
                key for key, value in values.items() if getattr(before, key) != value and key != "label"
            ]
            if changed or before.label != row.label:
                self.row_updates.append({"id": before.id, **values})
                if changed:
                    self.count("rows", "updated")
                    self.lines.append(f"row {row.label} of {new.name}: {', '.join(changed)} updated")
            self.seats(new.name, before, row)
        for left in gone.values():
            self.remove_row(new.name, left, alone=True)

    def sections(
        self, stored: Sequence[_Section], layout_id: uuid.UUID, sections: Sequence[LayoutSection]
    ) -> None:
        by_name = {section.name: section for section in stored}
        for sort_order, section in enumerate(sections):
            before = by_name.pop(section.name, None)
            if before is None:
                section_id = uuid.uuid4()
                self.section_adds.append(
                    {
                        "id": section_id,
                        "layout_id": layout_id,
                        "name": section.name,
                        "sort_order": sort_order,
                        "placement": _placement(section.map),
                    }
                )
                self.count("sections", "added")
                for index, row in enumerate(section.rows):
                    self.add_row(section_id, section.name, row, index, alone=False)
                seats = sum(len(row.seats) for row in section.rows)
                self.lines.append(
                    f"section {section.name}: added ({_n(len(section.rows), 'row')}, {_n(seats, 'seat')})"
                )
                continue
            values = {"sort_order": sort_order, "placement": _placement(section.map)}
            changed = [key for key, value in values.items() if getattr(before, key) != value]
            if changed:
                self.section_updates.append({"id": before.id, **values})
                self.count("sections", "updated")
                self.lines.append(f"section {section.name}: {', '.join(changed)} updated")
            self.rows(before, section)
        for old in by_name.values():
            self.section_removes.append(old.id)
            self.count("sections", "removed")
            for old_row in old.rows:
                self.remove_row(old.name, old_row, alone=False)
            seats = sum(len(old_row.seats) for old_row in old.rows)
            self.lines.append(
                f"section {old.name}: removed ({_n(len(old.rows), 'row')}, {_n(seats, 'seat')})"
            )

    def areas(self, stored: Sequence[_Area], layout_id: uuid.UUID, areas: Sequence[LayoutArea]) -> None:
        by_name = {area.name: area for area in stored}
        for sort_order, area in enumerate(areas):
            before = by_name.pop(area.name, None)
            values = {
                "name": area.name,
                "capacity": area.capacity,
                "tier": area.tier,
                "sort_order": sort_order,
            }
            if before is None:
                self.area_adds.append({"layout_id": layout_id, **values})
                self.count("ga_areas", "added")
                self.lines.append(f"GA area {area.name}: added ({area.capacity} places)")
                continue
            changed = [key for key, value in values.items() if getattr(before, key) != value]
            if changed:
                self.area_updates.append({"id": before.id, **values})
                self.count("ga_areas", "updated")
                said = (
                    f"capacity {before.capacity} → {area.capacity}"
                    if changed == ["capacity"]
                    else f"{', '.join(changed)} updated"
                )
                self.lines.append(f"GA area {area.name}: {said}")
        for old in by_name.values():
            self.area_removes[old.id] = old.name
            self.count("ga_areas", "removed")
            self.lines.append(f"GA area {old.name}: removed ({old.capacity} places)")


# --- refusals --------------------------------------------------------------------------------

_SEAT_BLOCKERS = text(
    "SELECT u.seat_id, e.slug, u.state,"
    " u.id IN (SELECT o.unit_id FROM order_items o) AS sold_before"
    " FROM inventory_units u JOIN events e ON e.id = u.event_id"
    " WHERE u.seat_id = ANY(:ids)"
    " AND (u.state IN ('held', 'sold')"
    " OR EXISTS (SELECT 1 FROM hold_items h WHERE h.unit_id = u.id)"
    " OR u.id IN (SELECT o.unit_id FROM order_items o))"
    " ORDER BY u.seat_id, e.starts_at"
)

_AREA_BLOCKERS = text(
    "SELECT t.ga_area_id AS area_id, e.slug FROM price_tiers t JOIN events e ON e.id = t.event_id"
    " WHERE t.ga_area_id = ANY(:ids)"
    " UNION SELECT u.ga_area_id, e.slug FROM inventory_units u JOIN events e ON e.id = u.event_id"
    " WHERE u.ga_area_id = ANY(:ids)"
    " ORDER BY 1, 2"
)


async def _refusals(session: AsyncSession, plan: _Plan, *, lock: bool) -> list[str]:
    """What the plan may not remove, each with why. With ``lock``, the units of the seats it
    removes are locked first, so that no hold takes one between this check and the delete."""
    refused: list[str] = []
    seat_ids = list(plan.seat_removes)
    if seat_ids:
        if lock:
            await session.execute(
                select(InventoryUnit.id)
                .where(InventoryUnit.seat_id.in_(seat_ids))
                .order_by(InventoryUnit.id)
                .with_for_update()
            )
        named: set[int] = set()
        for seat_id, slug, state, sold_before in (
            await session.execute(_SEAT_BLOCKERS, {"ids": seat_ids})
        ).all():
            if seat_id in named:
                continue
            named.add(seat_id)
            why = (
                f"{state} at {slug}"
                if state in ("held", "sold")
                else f"{'sold' if sold_before else 'held'} before at {slug}"
            )
            refused.append(f"{plan.seat_removes[seat_id]} ({why})")
    if plan.area_removes:
        sold: dict[uuid.UUID, list[str]] = {}
        for area_id, slug in (await session.execute(_AREA_BLOCKERS, {"ids": list(plan.area_removes)})).all():
            sold.setdefault(area_id, []).append(slug)
        refused.extend(
            f"GA area {plan.area_removes[area_id]} (sold by {', '.join(slugs)})"
            for area_id, slugs in sold.items()
        )
    return refused


# --- import ----------------------------------------------------------------------------------


_SEAT_COLUMNS = ("row_id", "number", "sort_order", "x", "y", "accessible", "companion", "restricted_view")
_INSERT_SEATS = text(
    "INSERT INTO seats (row_id, number, sort_order, x, y, accessible, companion, restricted_view)"
    " SELECT * FROM unnest(CAST(:row_id AS uuid[]), CAST(:number AS text[]), CAST(:sort_order AS int[]),"
    " CAST(:x AS float8[]), CAST(:y AS float8[]), CAST(:accessible AS bool[]), CAST(:companion AS bool[]),"
    " CAST(:restricted_view AS bool[]))"
)


async def _apply(session: AsyncSession, plan: _Plan) -> None:
    seat_ids = list(plan.seat_removes)
    if seat_ids:
        # Only units no hold or order ever named are left here (see _refusals).
        await session.execute(delete(InventoryUnit).where(InventoryUnit.seat_id.in_(seat_ids)))
        await session.execute(delete(Seat).where(Seat.id.in_(seat_ids)))
    if plan.row_removes:
        await session.execute(delete(SeatRow).where(SeatRow.id.in_(plan.row_removes)))
    if plan.section_removes:
        await session.execute(delete(Section).where(Section.id.in_(plan.section_removes)))
    if plan.area_removes:
        await session.execute(delete(GAArea).where(GAArea.id.in_(list(plan.area_removes))))
    for model, rows in (
        (Section, plan.section_updates),
        (SeatRow, plan.row_updates),
        (Seat, plan.seat_updates),
        (GAArea, plan.area_updates),
    ):
        if rows:
            await session.execute(update(model), rows)
    for model, rows in ((Section, plan.section_adds), (SeatRow, plan.row_adds), (GAArea, plan.area_adds)):
        if rows:
            await session.execute(insert(model), rows)
    if plan.seat_adds:
        # One statement of arrays rather than a row of parameters a seat: an arena's seats
        # go in about five times faster.
        await session.execute(
            _INSERT_SEATS, {column: [seat[column] for seat in plan.seat_adds] for column in _SEAT_COLUMNS}
        )


def _venue_values(venue: LayoutVenue) -> dict[str, Any]:
    return {name: getattr(venue, name) for name in _VENUE_FIELDS}


async def import_layout(session: AsyncSession, layout: Layout, *, dry_run: bool = False) -> ImportResult:
    """Make the venue and layout in the database what ``layout`` says (see the module's
    docstring for how things are matched), in the caller's transaction; with ``dry_run``,
    only work out what would change. The caller commits (or, for a dry run, rolls back).

    Raises:
        LayoutChangeRefused: the change would remove seats that are, or were, held or sold,
            or GA areas that events sell; nothing was changed.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"boxoffice.layout:{layout.venue.slug}"},
    )
    plan = _Plan()
    venue = await session.scalar(select(Venue).where(Venue.slug == layout.venue.slug))
    values = _venue_values(layout.venue)
    venue_change: Change = "unchanged"
    venue_changed: list[str] = []
    if venue is None:
        venue_change = "created"
        plan.lines.append(f"venue {layout.venue.slug}: created")
    else:
        venue_changed = [name for name, value in values.items() if getattr(venue, name) != value]
        if venue_changed:
            venue_change = "updated"
            plan.lines.append(f"venue {layout.venue.slug}: {', '.join(venue_changed)} updated")
    existing = None
    if venue is not None:
        existing = await session.scalar(
            select(SeatingLayout).where(SeatingLayout.venue_id == venue.id, SeatingLayout.name == layout.name)
        )
    layout_change: Change = "unchanged"
    layout_id = existing.id if existing is not None else uuid.uuid4()
    if existing is None:
        layout_change = "created"
        plan.lines.append(f"layout {layout.name}: created")
        stored = _Stored(layout_id, [], [], [])
    else:
        stored = await _stored(session, existing.id, list(existing.tiers))
        if stored.tiers != list(layout.tiers):
            layout_change = "updated"
            plan.lines.append(f"layout {layout.name}: tiers updated ({', '.join(layout.tiers) or 'none'})")
    plan.sections(stored.sections, layout_id, layout.sections)
    plan.areas(stored.areas, layout_id, layout.ga_areas)
    changed = venue_change != "unchanged" or layout_change != "unchanged" or not plan.empty
    events: list[uuid.UUID] = []
    if existing is not None:
        events = list(await session.scalars(select(Event.id).where(Event.layout_id == existing.id)))
    refused = await _refusals(session, plan, lock=not dry_run)
    if refused:
        raise LayoutChangeRefused(refused)
    venue_id = venue.id if venue is not None else None
    if changed and not dry_run:
        if venue is None:
            venue_id = await session.scalar(
                insert(Venue).values(slug=layout.venue.slug, **values).returning(Venue.id)
            )
            assert venue_id is not None
        elif venue_changed:
            await session.execute(update(Venue).where(Venue.id == venue.id).values(**values))
            await _venue_events_follow(session, venue.id, venue_changed)
        if existing is None:
            await session.execute(
                insert(SeatingLayout).values(
                    id=layout_id, venue_id=venue_id, name=layout.name, tiers=list(layout.tiers)
                )
            )
        elif layout_change == "updated":
            await session.execute(
                update(SeatingLayout).where(SeatingLayout.id == layout_id).values(tiers=list(layout.tiers))
            )
        await _apply(session, plan)
        await session.flush()
    lines = plan.lines
    if len(lines) > MAX_CHANGE_LINES:
        lines = [*lines[:MAX_CHANGE_LINES], f"... and {len(lines) - MAX_CHANGE_LINES} more changes"]
    return ImportResult(
        venue=layout.venue.slug,
        layout=layout.name,
        venue_id=venue_id,
        layout_id=layout_id if existing is not None or not dry_run else None,
        dry_run=dry_run,
        changed=changed,
        venue_change=venue_change,
        layout_change=layout_change,
        counts=plan.counts,
        changes=lines,
        seats=layout.seats,
        ga_places=layout.ga_places,
        places=layout.places,
        events=len(events),
    )


async def _venue_events_follow(session: AsyncSession, venue_id: uuid.UUID, changed: Iterable[str]) -> None:
    """Events copy their venue's city, and search documents its name and city: both follow."""
    changed = set(changed)
    if not changed & {"name", "city"}:
        return
    event_ids = list(
        await session.scalars(
            update(Event)
            .where(Event.venue_id == venue_id)
            .values(city=select(Venue.city).where(Venue.id == venue_id).scalar_subquery())
            .returning(Event.id)
        )
    )
    await refresh_search_documents(session, event_ids)


# --- export ----------------------------------------------------------------------------------


async def _find(session: AsyncSession, venue: str, layout: str | None) -> tuple[Venue, SeatingLayout]:
    try:
        as_id: uuid.UUID | None = uuid.UUID(venue)
    except ValueError:
        as_id = None
    found = await session.scalar(
        select(Venue).where(or_(Venue.slug == venue, Venue.id == as_id) if as_id else Venue.slug == venue)
    )
    if found is None:
        raise VenueNotFound(f"There is no venue {venue!r}.")
    layouts = list(
        await session.scalars(
            select(SeatingLayout).where(SeatingLayout.venue_id == found.id).order_by(SeatingLayout.name)
        )
    )
    if layout is not None:
        named = [one for one in layouts if one.name == layout]
        if not named:
            known = ", ".join(one.name for one in layouts) or "none"
            raise LayoutNotFound(f"Venue {found.slug} has no layout {layout!r} (it has: {known}).")
        return found, named[0]
    if len(layouts) != 1:
        known = ", ".join(one.name for one in layouts) or "none"
        raise LayoutNotFound(f"Venue {found.slug} has {len(layouts)} layouts ({known}): name one.")
    return found, layouts[0]


async def stored_layout(session: AsyncSession, venue: str, layout: str | None = None) -> Layout:
    """The layout as the database has it. ``venue`` is a slug or an id; ``layout`` a name,
    which may be left out when the venue has one layout.

    Raises:
        VenueNotFound: no such venue.
        LayoutNotFound: no such layout, or the venue has several and none was named.
    """
    found, chosen = await _find(session, venue, layout)
    stored = await _stored(session, chosen.id, list(chosen.tiers))
    sections = tuple(
        LayoutSection(
            name=section.name,
            map=None if section.placement is None else SectionMap.from_json(section.placement),
            rows=tuple(
                LayoutRow(
                    label=row.label,
                    tier=row.tier,
                    map=None if row.placement is None else RowMap.from_json(row.placement),
                    seats=tuple(
                        LayoutSeat(
                            number=seat.number,
                            x=seat.x,
                            y=seat.y,
                            accessible=seat.accessible,
                            companion=seat.companion,
                            restricted_view=seat.restricted_view,
                        )
                        for seat in row.seats
                    ),
                )
                for row in section.rows
                if row.seats
            ),
        )
        for section in stored.sections
    )
    return Layout(
        venue=LayoutVenue(
            slug=found.slug,
            name=found.name,
            address=found.address,
            city=found.city,
            country=found.country,
            latitude=found.latitude,
            longitude=found.longitude,
            timezone=found.timezone,
        ),
        name=chosen.name,
        tiers=tuple(stored.tiers),
        sections=tuple(section for section in sections if section.rows),
        ga_areas=tuple(LayoutArea(name=a.name, capacity=a.capacity, tier=a.tier) for a in stored.areas),
    )


async def export_layout(session: AsyncSession, venue: str, layout: str | None = None) -> str:
    """The layout file of a stored layout (see ``stored_layout``): importing it changes
    nothing.

    Raises:
        VenueNotFound, LayoutNotFound: see ``stored_layout``.
        LayoutInvalid: a seat number that no layout file can write (one not made by a file).
    """
    found = await stored_layout(session, venue, layout)
    try:
        return dump_layout(found)
    except SpecError as error:
        raise LayoutInvalid(f"venue {found.venue.slug}", [(None, str(error))]) from None


@dataclass(frozen=True)
class LayoutSummary:
    venue: str
    venue_name: str
    city: str
    layout: str
    seats: int
    ga_places: int
    places: int
    events: int


async def list_layouts(session: AsyncSession) -> list[LayoutSummary]:
    """Every venue's layouts with their seats, GA places and events, by venue and layout."""
    seats = (
        select(Section.layout_id, func.count(Seat.id).label("seats"))
        .join(SeatRow, SeatRow.section_id == Section.id)
        .join(Seat, Seat.row_id == SeatRow.id)
        .group_by(Section.layout_id)
        .subquery()
    )
    places = (
        select(GAArea.layout_id, func.sum(GAArea.capacity).label("places"))
        .group_by(GAArea.layout_id)
        .subquery()
    )
    events = select(Event.layout_id, func.count().label("events")).group_by(Event.layout_id).subquery()
    rows = await session.execute(
        select(
            Venue.slug,
            Venue.name,
            Venue.city,
            SeatingLayout.name,
            func.coalesce(seats.c.seats, 0),
            func.coalesce(places.c.places, 0),
            func.coalesce(events.c.events, 0),
        )
        .join(SeatingLayout, SeatingLayout.venue_id == Venue.id)
        .outerjoin(seats, seats.c.layout_id == SeatingLayout.id)
        .outerjoin(places, places.c.layout_id == SeatingLayout.id)
        .outerjoin(events, events.c.layout_id == SeatingLayout.id)
        .order_by(Venue.slug, SeatingLayout.name)
    )
    return [
        LayoutSummary(
            venue=slug,
            venue_name=name,
            city=city,
            layout=layout,
            seats=int(seat_count),
            ga_places=int(ga),
            places=int(seat_count) + int(ga),
            events=int(event_count),
        )
        for slug, name, city, layout, seat_count, ga, event_count in rows.all()
    ]
