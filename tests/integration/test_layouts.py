"""Layout files: validation that names the line, imports that are idempotent and never drop a
seat an event has held or sold, and exports that import as no change. On the test database,
with the real hold and payment services making seats held and sold."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.catalog.demo import VENUES, load_demo
from booking.catalog.layout_file import Layout, dump_layout, layout_document, parse_layout, read_layout
from booking.catalog.layout_geometry import expand_labels, expand_numbers
from booking.catalog.layouts import example_layouts, export_layout, import_layout, stored_layout
from booking.errors import LayoutChangeRefused, LayoutInvalid
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.payments import offline
from booking.payments.offline import OfflineGateway
from tests.factories import make_fan, pay_with_card

BROKEN = Path(__file__).parent / "layout_files"

# Each broken file, the line its (first) problem is reported at, and what the problem says.
EXPECTED: dict[str, tuple[int, str]] = {
    "duplicate_seat.yaml": (15, "seat 5 appears twice in row A of section 'Stalls'"),
    "overlapping_seats.yaml": (
        19,
        "seats overlap: Stalls Right row A seat 1 at (5, 2) and Stalls Left row A seat 6",
    ),
    "empty_section.yaml": (16, "section 'Gallery' is empty"),
    "unknown_tier.yaml": (17, "unknown tier 'Premum' (declared: Premium, Standard)"),
    "unknown_area_tier.yaml": (14, "unknown tier 'Standing'"),
    "odd_numbering_even_range.yaml": (18, "odd numbering, but range 2-30 has 2 at one end"),
    "backwards_range.yaml": (15, "range 30-1 runs backwards"),
    "bad_range.yaml": (15, "bad range 'A-5'"),
    "unknown_field.yaml": (14, "unknown field 'lable' (did you mean 'label'?)"),
    "missing_field.yaml": (1, "venue: missing field 'city'"),
    "wrong_type.yaml": (12, "ga_areas[0].capacity: input should be a valid integer, not 'lots'"),
    "duplicate_key.yaml": (13, "duplicate key 'name' (first at line 11)"),
    "not_yaml.yaml": (14, "not valid YAML"),
    "companion_not_beside.yaml": (
        17,
        "companion seat 5 of row A of section 'Stalls' is not beside an accessible",
    ),
    "skip_not_in_row.yaml": (16, "skip: the row has no seat 13"),
    "positions_count.yaml": (15, "2 positions for the 3 seats"),
    "no_map.yaml": (13, "has no positions, and section 'Box A' has no map"),
    "bad_timezone.yaml": (8, "unknown time zone 'Europe/Lundon'"),
    "duplicate_row.yaml": (16, "row B appears twice in section 'Stalls' (first at line 14)"),
    "name_taken.yaml": (17, "GA area 'Floor': the name is taken (line 11)"),
    "seat_count_not_numbers.yaml": (15, "seats: 30 names one seat, numbered 30: write 1-30"),
    "nothing_to_sell.yaml": (9, "the layout has no sections and no ga_areas"),
    "broken_json.json": (6, "ga_areas[0].capacity: input should be greater than 0"),
}

SMALL = """\
venue:
  slug: test-hall
  name: Test Hall
  address: 1 Test Street
  city: Testville
  country: GB
  latitude: 51.5
  longitude: -0.1
  timezone: Europe/London
layout: Main
tiers: [Stalls, Standing]
sections:
  - name: Stalls
    tier: Stalls
    map: {origin: [0, 0]}
    rows:
      - labels: A-B
        seats: 1-10
      - label: C
        seats: 1-10
        accessible: [1]
        companion: [2]
ga_areas:
  - name: Floor
    capacity: 100
    tier: Standing
"""

TABLES = ("venues", "seating_layouts", "sections", "seat_rows", "seats", "ga_areas", "inventory_units")


def small(**replace: str) -> Layout:
    """The small layout, with some of its lines replaced."""
    source = SMALL
    for old, new in replace.items():
        assert old in source
        source = source.replace(old, new)
    return parse_layout(source, "test.yaml")


async def counts(session: AsyncSession) -> dict[str, int]:
    return {table: int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0) for table in TABLES}


async def snapshot(session: AsyncSession) -> list[tuple[object, ...]]:
    """Every seat as stored, with its row and section."""
    rows = await session.execute(
        text(
            "SELECT s.name, r.label, r.tier, seats.id, seats.number, seats.sort_order, seats.x, seats.y,"
            " seats.accessible, seats.companion, seats.restricted_view FROM seats"
            " JOIN seat_rows r ON r.id = seats.row_id JOIN sections s ON s.id = r.section_id"
            " ORDER BY seats.id"
        )
    )
    return [tuple(row) for row in rows.all()]


async def imported(session: AsyncSession, layout: Layout) -> None:
    await import_layout(session, layout)
    await session.commit()


async def seat_id(session: AsyncSession, row: str, number: str) -> int:
    found = await session.scalar(
        text(
            "SELECT seats.id FROM seats JOIN seat_rows r ON r.id = seats.row_id WHERE r.label = :r AND number = :n"
        ),
        {"r": row, "n": number},
    )
    assert found is not None
    return int(found)


async def event_on(session: AsyncSession, venue: str) -> tuple[uuid.UUID, str]:
    """An event on sale now on the venue's layout, selling every seat and the GA area. Commits."""
    now = dt.datetime.now(dt.UTC)
    slug = f"night-{uuid.uuid4().hex[:6]}"
    event_id = await session.scalar(
        text(
            "INSERT INTO events (slug, title, performer, category, venue_id, layout_id, city, timezone,"
            " starts_at, ends_at, onsale_starts_at, onsale_ends_at, status)"
            " SELECT :slug, 'Test Night', 'The Testers', 'music', v.id, l.id, v.city, v.timezone,"
            " :starts, :ends, :opens, :starts, 'on_sale'"
            " FROM venues v JOIN seating_layouts l ON l.venue_id = v.id WHERE v.slug = :venue RETURNING id"
        ),
        {
            "slug": slug,
            "venue": venue,
            "starts": now + dt.timedelta(days=10),
            "ends": now + dt.timedelta(days=10, hours=3),
            "opens": now - dt.timedelta(days=1),
        },
    )
    seated = await session.scalar(
        text(
            "INSERT INTO price_tiers (event_id, name, price_minor, currency) VALUES (:e, 'Seated', 5000, 'GBP')"
            " RETURNING id"
        ),
        {"e": event_id},
    )
    await session.execute(
        text(
            "INSERT INTO inventory_units (event_id, price_tier_id, seat_id) SELECT :e, :t, seats.id FROM seats"
            " JOIN seat_rows r ON r.id = seats.row_id JOIN sections s ON s.id = r.section_id"
            " JOIN events e ON e.layout_id = s.layout_id WHERE e.id = :e"
        ),
        {"e": event_id, "t": seated},
    )
    await session.execute(
        text(
            "WITH tier AS (INSERT INTO price_tiers (event_id, name, price_minor, currency, ga_area_id)"
            " SELECT :e, 'Standing', 3000, 'GBP', a.id FROM ga_areas a JOIN events e ON e.layout_id = a.layout_id"
            " WHERE e.id = :e RETURNING id, ga_area_id)"
            " INSERT INTO inventory_units (event_id, price_tier_id, ga_area_id)"
            " SELECT :e, tier.id, tier.ga_area_id FROM tier, generate_series(1, 5)"
        ),
        {"e": event_id},
    )
    await session.commit()
    assert event_id is not None
    return event_id, slug


async def hold(session: AsyncSession, event_id: uuid.UUID, seat_ids: list[int]) -> tuple[Owner, uuid.UUID]:
    owner = Owner(fan_id=await make_fan(session))
    view = await holds.create_hold(
        session, owner=owner, event_id=event_id, selection=SeatSelection(tuple(seat_ids)), policy=HoldPolicy()
    )
    await session.commit()
    return owner, view.id


# --- validation --------------------------------------------------------------------------------


def test_every_broken_file_has_an_expectation() -> None:
    assert {path.name for path in BROKEN.iterdir()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_broken_file_is_refused_naming_the_file_and_the_line(name: str) -> None:
    line, fragment = EXPECTED[name]
    with pytest.raises(LayoutInvalid) as raised:
        read_layout(BROKEN / name)
    error = raised.value
    first = error.lines[0]
    assert first.startswith(f"{BROKEN / name}:{line}: "), first
    assert fragment in first, first
    assert error.problems[0][0] == line
    assert error.code == "layout-invalid"


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    broken = SMALL.replace("seats: 1-10\n      - label: C", "seats: 1-10, 3\n      - label: C").replace(
        "tier: Standing", "tier: Stand"
    )
    with pytest.raises(LayoutInvalid) as raised:
        parse_layout(broken, "two.yaml")
    assert [line for line, _ in raised.value.problems] == [18, 26]
    assert "seat 3 appears twice in row A" in raised.value.lines[0]
    assert "unknown tier 'Stand'" in raised.value.lines[1]


NASTY = [
    "", "~", "[]", "{}", "[1]", "[[1, 2], [3]]", "true", "-1", "1e400", ".nan", "*a", "!!binary aGk=",
    "!!python/object:os.system x", "1-99999999", "A-ZZZ", "x" * 300, '"\\u0000"', "{a: 1}", "[1-3, 5-1]", "1--3",
    "-", ",", "1,,2", "0", "3A-5", "Z-A", "[true]", "9" * 40,
]  # fmt: skip


def test_no_value_anywhere_breaks_the_reader() -> None:
    # Each value of the small file replaced by each of these: a layout or LayoutInvalid, never
    # another exception.
    lines = SMALL.splitlines()
    problems: list[str] = []
    for index, line in enumerate(lines):
        if ":" not in line:
            continue
        key = line.split(":")[0]
        for value in NASTY:
            source = "\n".join([*lines[:index], f"{key}: {value}", *lines[index + 1 :]])
            try:
                parse_layout(source, "nasty.yaml")
            except LayoutInvalid as error:
                problems.extend(error.lines)
    assert problems
    assert all(problem.startswith("nasty.yaml") for problem in problems)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("a: &x [*x]", "nested more than 20 deep"),
        ("a: " + "[" * 500 + "]" * 500, "nested more than 20 deep"),
        ("- a\n- b", "the file must be a mapping"),
        (
            "x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6)
            ),
            "more than 1000000 values",
        ),
        ("a: 1\n---\nb: 2", "expected a single document"),
    ],
    ids=["alias-in-itself", "deep", "list", "aliases-of-aliases", "two-documents"],
)
def test_hostile_yaml_is_a_clear_problem(source: str, fragment: str) -> None:
    with pytest.raises(LayoutInvalid, match=fragment):
        parse_layout(source, "hostile.yaml")


def test_a_file_that_cannot_be_read_is_a_problem_too(tmp_path: Path) -> None:
    with pytest.raises(LayoutInvalid, match="cannot read the file"):
        read_layout(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"venue:\n  name: Caf\xe9\n")
    with pytest.raises(LayoutInvalid, match=r"latin1.yaml:2: the file is not UTF-8"):
        read_layout(tmp_path / "latin1.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(LayoutInvalid, match="the file is empty"):
        read_layout(tmp_path / "empty.yaml")


def test_yaml_1_1_words_stay_text() -> None:
    # YAML 1.1 reads NO (Norway), Off and a row ON as booleans, and 10:30 as 630.
    layout = small(
        **{
            "country: GB": "country: NO",
            "name: Test Hall": "name: Off",
            "address: 1 Test Street": "address: 10:30",
            "label: C": "label: ON",
        }
    )
    assert (layout.venue.country, layout.venue.name, layout.venue.address) == ("NO", "Off", "10:30")
    assert [row.label for row in layout.sections[0].rows] == ["A", "B", "ON"]


def test_json_is_accepted_with_its_lines(tmp_path: Path) -> None:
    document = layout_document(small())
    path = tmp_path / "hall.json"
    path.write_text(json.dumps(document, indent="\t"))
    assert read_layout(path) == small()


def test_numbering_skips_sides_and_directions() -> None:
    assert expand_numbers("1-9", "odd") == ["1", "3", "5", "7", "9"]
    assert expand_numbers("1-5, 7, 12A", "consecutive") == ["1", "2", "3", "4", "5", "7", "12A"]
    assert expand_labels("A-H, J-K") == ["A", "B", "C", "D", "E", "F", "G", "H", "J", "K"]
    assert expand_labels("Y-AB") == ["Y", "Z", "AA", "AB"]
    layout = parse_layout(
        SMALL.replace(
            "      - labels: A-B\n        seats: 1-10\n",
            "      - label: A\n        seats: 1-11\n        skip: 5\n        gap_after: 4\n"
            "      - label: B\n        seats: 2-20\n        numbering: even\n        direction: right_to_left\n"
            "        restricted_view: 2-6\n",
        ),
        "sides.yaml",
    )
    row_a, row_b, _ = layout.sections[0].rows
    assert [seat.number for seat in row_a.seats] == ["1", "2", "3", "4", "6", "7", "8", "9", "10", "11"]
    xs = [seat.x for seat in row_a.seats]
    assert xs[4] - xs[3] == 20  # the aisle after seat 4
    assert all(b - a == 10 for a, b in itertools.pairwise(xs[4:]))
    assert [seat.number for seat in row_b.seats] == [str(n) for n in range(2, 21, 2)]
    assert [seat.x for seat in row_b.seats] == sorted((seat.x for seat in row_b.seats), reverse=True)
    assert [seat.number for seat in row_b.seats if seat.restricted_view] == ["2", "4", "6"]
    assert {seat.y for seat in row_b.seats} == {12.0}


def test_a_curved_section_is_symmetric_and_bends_towards_the_stage() -> None:
    layout = small(**{"map: {origin: [0, 0]}": "map: {origin: [0, 0], radius: 100}"})
    row = layout.sections[0].rows[0]
    left, right = row.seats[0], row.seats[-1]
    assert left.x == -right.x
    assert left.y == right.y < 0  # the ends come forward, towards the stage above row A


@pytest.mark.parametrize(
    ("name", "places", "seats"), [("castlegate-theatre", 2000, 2000), ("meridian-arena", 20000, 12500)]
)
def test_the_shipped_examples_validate_with_their_places(name: str, places: int, seats: int) -> None:
    (path,) = [path for path in example_layouts() if path.stem == name]
    layout = read_layout(path)
    assert (layout.places, layout.seats) == (places, seats)
    assert parse_layout(dump_layout(layout), "again.yaml") == layout


# --- import ------------------------------------------------------------------------------------


async def test_the_shipped_examples_import_with_their_places(session: AsyncSession) -> None:
    for path in example_layouts():
        result = await import_layout(session, read_layout(path))
        await session.commit()
        assert result.changed
    rows = await session.execute(
        text(
            "SELECT v.slug, (SELECT count(*) FROM seats JOIN seat_rows r ON r.id = seats.row_id"
            " JOIN sections s ON s.id = r.section_id WHERE s.layout_id = l.id)"
            " + (SELECT coalesce(sum(capacity), 0) FROM ga_areas a WHERE a.layout_id = l.id)"
            " FROM venues v JOIN seating_layouts l ON l.venue_id = v.id"
        )
    )
    assert dict(rows.all()) == {"castlegate-theatre": 2000, "meridian-arena": 20000}
    accessible = await session.scalar(text("SELECT count(*) FROM seats WHERE accessible"))
    companions = await session.scalar(text("SELECT count(*) FROM seats WHERE companion"))
    assert accessible == companions == 4 + 13 * 4


async def test_importing_twice_changes_nothing(session: AsyncSession) -> None:
    first = await import_layout(session, small())
    await session.commit()
    assert first.changed
    assert (first.venue_change, first.layout_change) == ("created", "created")
    assert first.counts["seats"]["added"] == 30
    before = (await counts(session), await snapshot(session))
    again = await import_layout(session, small())
    await session.commit()
    assert not again.changed
    assert again.changes == []
    assert (again.venue_change, again.layout_change) == ("unchanged", "unchanged")
    assert all(n == 0 for changes in again.counts.values() for n in changes.values())
    assert (await counts(session), await snapshot(session)) == before


async def test_a_changed_file_renames_a_row_and_adds_a_seat(session: AsyncSession) -> None:
    # Left-aligned rows, so that a seat added at the end moves no other seat.
    aligned = {"map: {origin: [0, 0]}": "map: {origin: [0, 0], align: left}"}
    await imported(session, small(**aligned))
    row_b = [seat for seat in await snapshot(session) if seat[1] == "B"]
    rows = "label: A\n        seats: 1-11\n      - label: BB\n        seats: 1-10"
    result = await import_layout(session, small(**aligned, **{"labels: A-B\n        seats: 1-10": rows}))
    await session.commit()
    assert result.counts["rows"] == {"added": 0, "updated": 0, "renamed": 1, "removed": 0}
    assert result.counts["seats"] == {"added": 1, "updated": 0, "renamed": 0, "removed": 0}
    assert result.changes == ["row A of Stalls: seats 1 added (11)", "row B of Stalls: renamed BB"]
    after = await snapshot(session)
    renamed = [seat for seat in after if seat[1] == "BB"]
    # The renamed row's seats are the same seats (ids and all), under the new label.
    assert [seat[3:] for seat in renamed] == [seat[3:] for seat in row_b]
    assert not [seat for seat in after if seat[1] == "B"]
    assert len(after) == 31


async def test_removing_a_held_seat_is_refused_and_changes_nothing(session: AsyncSession) -> None:
    await imported(session, small())
    event_id, slug = await event_on(session, "test-hall")
    await hold(session, event_id, [await seat_id(session, "A", "3")])
    before = (await counts(session), await snapshot(session))
    with pytest.raises(LayoutChangeRefused) as refused:
        await import_layout(
            session, small(**{"labels: A-B\n        seats: 1-10": "labels: A-B\n        seats: 1-2, 4-10"})
        )
    await session.rollback()
    assert refused.value.places == [f"Stalls row A seat 3 (held at {slug})"]
    assert "Stalls row A seat 3 (held at" in refused.value.detail
    assert (await counts(session), await snapshot(session)) == before


async def test_removing_a_sold_seat_is_refused_and_names_it(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    await imported(session, small())
    event_id, slug = await event_on(session, "test-hall")
    owner, hold_id = await hold(session, event_id, [await seat_id(session, "C", "5")])
    settled = await pay_with_card(sessions, OfflineGateway(sessions), owner, hold_id, offline.SUCCESS)
    assert settled.order_id is not None
    before = (await counts(session), await snapshot(session))
    with pytest.raises(LayoutChangeRefused) as refused:
        # Row C gone from the file: all ten seats would go, one of them sold.
        await import_layout(
            session,
            small(
                **{
                    "      - label: C\n        seats: 1-10\n        accessible: [1]\n        companion: [2]\n": ""
                }
            ),
        )
    await session.rollback()
    assert refused.value.places == [f"Stalls row C seat 5 (sold at {slug})"]
    assert (await counts(session), await snapshot(session)) == before


async def test_a_seat_held_once_and_released_stays_too(session: AsyncSession) -> None:
    await imported(session, small())
    event_id, slug = await event_on(session, "test-hall")
    owner, hold_id = await hold(session, event_id, [await seat_id(session, "A", "1")])
    await holds.release_hold(session, owner=owner, hold_id=hold_id)
    await session.commit()
    with pytest.raises(LayoutChangeRefused) as refused:
        await import_layout(
            session, small(**{"labels: A-B\n        seats: 1-10": "labels: A-B\n        seats: 2-10"})
        )
    await session.rollback()
    assert refused.value.places == [f"Stalls row A seat 1 (held before at {slug})"]


async def test_removing_a_seat_an_event_only_offers_takes_it_off_sale(session: AsyncSession) -> None:
    await imported(session, small())
    event_id, _ = await event_on(session, "test-hall")
    units = await counts(session)
    result = await import_layout(
        session, small(**{"labels: A-B\n        seats: 1-10": "labels: A-B\n        seats: 1-9"})
    )
    await session.commit()
    assert result.counts["seats"]["removed"] == 2
    assert result.events == 1
    after = await counts(session)
    assert after["seats"] == units["seats"] - 2
    assert after["inventory_units"] == units["inventory_units"] - 2
    left = await session.scalar(
        text("SELECT count(*) FROM inventory_units WHERE event_id = :e AND seat_id IS NOT NULL"),
        {"e": event_id},
    )
    assert left == 28


async def test_removing_a_ga_area_an_event_sells_is_refused(session: AsyncSession) -> None:
    await imported(session, small())
    _, slug = await event_on(session, "test-hall")
    before = await counts(session)
    with pytest.raises(LayoutChangeRefused) as refused:
        await import_layout(
            session, small(**{"ga_areas:\n  - name: Floor\n    capacity: 100\n    tier: Standing\n": ""})
        )
    await session.rollback()
    assert refused.value.places == [f"GA area Floor (sold by {slug})"]
    assert await counts(session) == before


async def test_a_dry_run_says_what_would_change_and_changes_nothing(session: AsyncSession) -> None:
    await imported(session, small())
    before = (await counts(session), await snapshot(session))
    result = await import_layout(session, small(**{"capacity: 100": "capacity: 120"}), dry_run=True)
    await session.rollback()
    assert result.changed
    assert result.dry_run
    assert result.changes == ["GA area Floor: capacity 100 → 120"]
    assert (await counts(session), await snapshot(session)) == before


async def test_a_venue_change_reaches_its_events(session: AsyncSession) -> None:
    await imported(session, small())
    event_id, _ = await event_on(session, "test-hall")
    result = await import_layout(session, small(**{"city: Testville": "city: Newtown"}))
    await session.commit()
    assert result.venue_change == "updated"
    assert await session.scalar(text("SELECT city FROM events WHERE id = :e"), {"e": event_id}) == "Newtown"


# --- export ------------------------------------------------------------------------------------


async def test_export_then_import_is_a_no_op(session: AsyncSession) -> None:
    await load_demo(session)
    await imported(
        session, small(**{"map: {origin: [0, 0]}": "map: {origin: [0, 0], radius: 300, rotation: 15}"})
    )
    venues = [spec.slug for spec in VENUES if spec.sections or spec.ga_areas]
    venues += ["test-hall", *(read_layout(path).venue.slug for path in example_layouts())]
    before = (await counts(session), await snapshot(session))
    for venue in venues:
        exported = await export_layout(session, venue)
        layout = parse_layout(exported, f"{venue}.yaml")
        assert layout == await stored_layout(session, venue)
        result = await import_layout(session, layout)
        assert not result.changed, (venue, result.changes)
    await session.commit()
    assert (await counts(session), await snapshot(session)) == before


async def test_an_export_writes_the_shorthand_back(session: AsyncSession) -> None:
    (theatre,) = [path for path in example_layouts() if path.stem == "castlegate-theatre"]
    await imported(session, read_layout(theatre))
    exported = await export_layout(session, "castlegate-theatre")
    assert "labels: A-C" in exported
    assert "numbering: odd" in exported
    assert "seats: 1-12, 14-51" in exported  # no seat 13 in the upper circle
    # Only the boxes, placed by hand, list their positions.
    assert exported.count("positions:") == 8


async def test_an_export_of_an_unknown_venue_says_so(session: AsyncSession) -> None:
    from booking.errors import VenueNotFound

    with pytest.raises(VenueNotFound, match="no venue 'nowhere'"):
        await export_layout(session, "nowhere")


def test_a_layout_is_plain_data() -> None:
    # Frozen dataclasses all the way down: equal files give equal layouts.
    layout = small()
    assert dataclasses.is_dataclass(layout)
    assert layout == small()
    assert layout.places == 130
