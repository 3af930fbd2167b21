"""Layout files: a venue and one of its seating layouts, as YAML (or JSON) a person writes and
reviews. The format is documented in docs/catalog.md.

Reading a file gives a ``Layout`` with every seat expanded and placed, or raises
``LayoutInvalid`` listing every problem found (up to ``MAX_PROBLEMS``), each naming the file
and line. Writing gives back a file that reads as the same ``Layout``.

The YAML is read node by node (PyYAML's composer, which keeps each node's line) with the
YAML 1.2 core schema: only ``true``/``false`` are booleans, so a country ``NO`` or a row
``ON`` stays text. Its shape is checked by a pydantic schema; each schema error is mapped
back to the line of the key or item it is about. What the schema cannot say (duplicate seats,
overlapping seats, a tier no one declared...) is checked on the expanded layout.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, ValidationError

from booking.catalog.layout_geometry import (
    Align,
    Direction,
    Numbering,
    NumbersSpec,
    RowMap,
    SectionMap,
    SpecError,
    compress_labels,
    compress_numbers,
    expand_labels,
    expand_numbers,
    row_positions,
    select_numbers,
)
from booking.errors import LayoutInvalid

MAX_FILE_BYTES = 5_000_000
# Every node visited counts, an alias's each time: a file of nested aliases cannot make the
# reader expand it without end.
MAX_NODES = 1_000_000
MAX_PROBLEMS = 50
# A layout file nests six deep (sections, a row, its positions, a pair); an alias that
# contains itself nests without end.
MAX_DEPTH = 20
MAX_OVERLAPS = 10
MAX_SEATS = 100_000
MAX_COORDINATE = 1_000_000.0
# Map units: a seat is drawn about ten wide (the default seat spacing). Two seats whose centres
# are closer than this overlap.
MIN_SEAT_DISTANCE = 5.0

Path_ = tuple[str | int, ...]


# --- the expanded layout ---------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutVenue:
    slug: str
    name: str
    city: str
    country: str
    latitude: float
    longitude: float
    timezone: str
    address: str = ""


@dataclass(frozen=True)
class LayoutSeat:
    """One seat, placed on the map (``x``/``y``: map units, origin top left)."""

    number: str
    x: float
    y: float
    accessible: bool = False
    companion: bool = False
    restricted_view: bool = False


@dataclass(frozen=True)
class LayoutRow:
    """A row's seats in numbering order. ``map`` is how they were placed from the section's
    map; None when the file gave their positions."""

    label: str
    seats: tuple[LayoutSeat, ...]
    tier: str | None = None
    map: RowMap | None = None


@dataclass(frozen=True)
class LayoutSection:
    name: str
    rows: tuple[LayoutRow, ...]
    map: SectionMap | None = None


@dataclass(frozen=True)
class LayoutArea:
    """A general-admission area: unnamed places up to ``capacity``."""

    name: str
    capacity: int
    tier: str | None = None


@dataclass(frozen=True)
class Layout:
    """A venue and one seating layout, every seat expanded. ``tiers`` are the price tiers the
    layout's rows and areas name (an event prices them); names are unique across sections
    and GA areas, row labels within a section, seat numbers within a row."""

    venue: LayoutVenue
    name: str
    tiers: tuple[str, ...] = ()
    sections: tuple[LayoutSection, ...] = ()
    ga_areas: tuple[LayoutArea, ...] = ()

    @property
    def seats(self) -> int:
        return sum(len(row.seats) for section in self.sections for row in section.rows)

    @property
    def ga_places(self) -> int:
        return sum(area.capacity for area in self.ga_areas)

    @property
    def places(self) -> int:
        return self.seats + self.ga_places

    def seat_places(self) -> Iterator[tuple[LayoutSection, LayoutRow, LayoutSeat]]:
        for section in self.sections:
            for row in section.rows:
                for seat in row.seats:
                    yield section, row, seat


# --- reading YAML with lines -----------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema's implicit types instead of 1.1's
    (no ``yes``/``no``/``on``/``off`` booleans, no sexagesimal or ``1_000`` numbers, no
    implicit dates)."""

    # Its own table, not the base class's: PyYAML looks the resolvers up on the class.
    yaml_implicit_resolvers = {}


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)

_TAG = "tag:yaml.org,2002:"


class _TooBig(Exception):
    pass


@dataclass
class _Reader:
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    nodes: int = 0

    def value(self, node: yaml.Node, path: Path_) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"the file has more than {MAX_NODES} values")
        if len(path) > MAX_DEPTH:
            raise _TooBig(f"values are nested more than {MAX_DEPTH} deep")
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append((key_line, "a key must be a plain name"))
                    continue
                key = str(key_node.value)
                if key in result:
                    first = self.lines.get((*path, key))
                    self.problems.append((key_line, f"duplicate key '{key}' (first at line {first})"))
                    continue
                self.lines[(*path, key)] = key_line
                result[key] = self.value(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.value(item, (*path, index)))
            return items
        assert isinstance(node, yaml.ScalarNode)
        text = str(node.value)
        kind = node.tag.removeprefix(_TAG)
        try:
            if kind == "str" or node.tag == "!":
                return text
            if kind == "null":
                return None
            if kind == "bool":
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                return text.lower() == "true"
            if kind == "int":
                return int(text)
            if kind == "float":
                return float(text)
        except ValueError:
            self.problems.append((line, f"{text!r} is not a {kind}"))
            return None
        self.problems.append((line, f"unsupported tag {node.tag}: write plain values"))
        return None


def _compose(text: str, source: str) -> tuple[Any, _Reader]:
    reader = _Reader()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except RecursionError:
        raise LayoutInvalid(source, [(None, f"values are nested more than {MAX_DEPTH} deep")]) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        what = " ".join(part for part in (error.context, error.problem) if part)
        hint = " (check the indentation and the quotes here)"
        line = mark.line + 1 if mark else None
        raise LayoutInvalid(source, [(line, f"not valid YAML: {what}{hint}")]) from None
    except yaml.YAMLError as error:
        raise LayoutInvalid(source, [(None, f"not valid YAML: {error}")]) from None
    finally:
        loader.dispose()
    if node is None:
        raise LayoutInvalid(source, [(1, "the file is empty: it needs venue, layout and sections")])
    try:
        data = reader.value(node, ())
    except _TooBig as error:
        raise LayoutInvalid(source, [(None, str(error))]) from None
    return data, reader


# --- the schema ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False, frozen=True)


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
Flag = StrictBool | NumbersSpec


class VenueFile(_Model):
    slug: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=80)]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    address: Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)] = ""
    city: Name
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    latitude: Annotated[float, Field(ge=-90, le=90)]
    longitude: Annotated[float, Field(ge=-180, le=180)]
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class MapFile(_Model):
    origin: tuple[float, float]
    seat_spacing: Annotated[float, Field(gt=0, le=1000)] = 10.0
    row_spacing: Annotated[float, Field(gt=0, le=1000)] = 12.0
    radius: Annotated[float, Field(gt=0, le=MAX_COORDINATE)] | None = None
    rotation: Annotated[float, Field(ge=-360, le=360)] = 0.0
    align: Align = "centre"


class RowFile(_Model):
    label: Label | None = None
    labels: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    seats: NumbersSpec
    numbering: Numbering | None = None
    direction: Direction | None = None
    skip: NumbersSpec | None = None
    gap_after: NumbersSpec | None = None
    space_before: Annotated[float, Field(ge=0, le=100)] = 0.0
    offset: Annotated[float, Field(ge=-1000, le=1000)] = 0.0
    tier: Name | None = None
    accessible: Flag = False
    companion: Flag = False
    restricted_view: Flag | None = None
    positions: list[tuple[float, float]] | None = None


class SectionFile(_Model):
    name: Name
    tier: Name | None = None
    numbering: Numbering | None = None
    direction: Direction | None = None
    restricted_view: StrictBool = False
    map: MapFile | None = None
    rows: list[RowFile] = []


class AreaFile(_Model):
    name: Name
    capacity: Annotated[StrictInt, Field(gt=0, le=200_000)]
    tier: Name | None = None


class LayoutFile(_Model):
    venue: VenueFile
    layout: Name
    tiers: list[Name] = []
    sections: list[SectionFile] = []
    ga_areas: list[AreaFile] = []


_FIELDS = sorted(
    {
        name
        for model in (VenueFile, MapFile, RowFile, SectionFile, AreaFile, LayoutFile)
        for name in model.model_fields
    }
)
_HINTS = {
    "seats": "seat numbers: 1-30, or 1-10, 12-30, or a list of numbers and ranges",
    "skip": "seat numbers to leave out: 13, or a list",
    "gap_after": "seat numbers an aisle follows: 10, or a list",
    "accessible": "true for every seat of the row, or which seats: [1, 30]",
    "companion": "true for every seat of the row, or which seats: [2, 29]",
    "restricted_view": "true, false, or which seats: 1-4",
    "positions": "a list of [x, y] pairs, one per seat",
    "origin": "a pair of numbers: [x, y]",
}


def _where(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "the file"


def _schema_problems(error: ValidationError, lines: dict[Path_, int]) -> list[tuple[int | None, str]]:
    grouped: dict[Path_, list[Any]] = {}
    for item in error.errors(include_url=False):
        known: Path_ = ()
        for part in item["loc"]:
            if (*known, part) not in lines:
                break
            known = (*known, part)
        if item["type"] == "missing":
            grouped.setdefault((*known, "\0missing", str(item["loc"][-1])), []).append(item)
        else:
            grouped.setdefault(known, []).append(item)
    problems: list[tuple[int | None, str]] = []
    for path, items in grouped.items():
        if len(path) >= 2 and path[-2] == "\0missing":
            parent = path[:-2]
            problems.append((lines.get(parent, 1), f"{_where(parent)}: missing field '{path[-1]}'"))
            continue
        line = lines.get(path, 1)
        first = items[0]
        if first["type"] == "extra_forbidden":
            key = str(path[-1])
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append((line, f"{_where(path[:-1])}: unknown field '{key}'{hint}"))
            continue
        name = next((str(part) for part in reversed(path) if isinstance(part, str)), "")
        if len(items) > 1 and name in _HINTS:
            message = f"expected {_HINTS[name]}"
        else:
            message = str(first["msg"])
            message = message[:1].lower() + message[1:]
            given = first.get("input")
            if isinstance(given, str | int | float) and not isinstance(given, bool):
                message += f", not {given!r}"
        if not path:
            problems.append((1, "the file must be a mapping of venue, layout, tiers, sections and ga_areas"))
            continue
        problems.append((line, f"{_where(path)}: {message}"))
    return problems


# --- from the schema to the expanded layout --------------------------------------------------


@dataclass
class _Builder:
    source: str
    lines: dict[Path_, int]
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    row_lines: dict[tuple[str, str], int | None] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append((self.line(path), message))

    def spec(self, path: Path_, work: Any, *args: Any) -> Any:
        """``work(*args)``, or None with a problem at ``path`` when it raises ``SpecError``."""
        try:
            return work(*args)
        except SpecError as error:
            self.problem(path, str(error))
            return None

    def venue(self, venue: VenueFile) -> LayoutVenue:
        try:
            ZoneInfo(venue.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(("venue", "timezone"), f"unknown time zone {venue.timezone!r} (e.g. Europe/London)")
        return LayoutVenue(
            slug=venue.slug,
            name=venue.name,
            address=venue.address,
            city=venue.city,
            country=venue.country,
            latitude=venue.latitude,
            longitude=venue.longitude,
            timezone=venue.timezone,
        )

    def tier(self, path: Path_, tier: str | None, tiers: tuple[str, ...]) -> None:
        if tier is not None and tier not in tiers:
            declared = f"declared: {', '.join(tiers)}" if tiers else "the file declares no tiers"
            self.problem((*path, "tier"), f"unknown tier '{tier}' ({declared})")

    def layout(self, parsed: LayoutFile) -> Layout:
        venue = self.venue(parsed.venue)
        tiers: list[str] = []
        for index, tier in enumerate(parsed.tiers):
            if tier in tiers:
                self.problem(("tiers", index), f"tier '{tier}' is declared twice")
            else:
                tiers.append(tier)
        names: dict[str, int | None] = {}

        def unique(path: Path_, name: str, what: str) -> None:
            if name in names:
                self.problem(
                    path, f"{what} '{name}': the name is taken (line {names[name]}); names must be unique"
                )
            else:
                names[name] = self.line(path)

        sections = []
        for index, section in enumerate(parsed.sections):
            path: Path_ = ("sections", index)
            unique(path, section.name, "section")
            self.tier(path, section.tier, tuple(tiers))
            sections.append(self.section(path, section, tuple(tiers)))
        areas = []
        for index, area in enumerate(parsed.ga_areas):
            path = ("ga_areas", index)
            unique(path, area.name, "GA area")
            self.tier(path, area.tier, tuple(tiers))
            areas.append(LayoutArea(name=area.name, capacity=area.capacity, tier=area.tier))
        layout = Layout(
            venue=venue,
            name=parsed.layout,
            tiers=tuple(tiers),
            sections=tuple(sections),
            ga_areas=tuple(areas),
        )
        if not sections and not areas:
            self.problem(("layout",), "the layout has no sections and no ga_areas: nothing to sell")
        if layout.seats > MAX_SEATS:
            self.problem(("sections",), f"{layout.seats} seats: a layout holds at most {MAX_SEATS}")
        elif not self.problems:
            self.overlaps(layout)
        return layout

    def section(self, path: Path_, section: SectionFile, tiers: tuple[str, ...]) -> LayoutSection:
        if not section.rows:
            self.problem(path, f"section '{section.name}' is empty: it has no rows")
        rows: list[LayoutRow] = []
        seen: dict[str, int | None] = {}
        space = 0.0
        for index, row in enumerate(section.rows):
            row_path: Path_ = (*path, "rows", index)
            self.tier(row_path, row.tier, tiers)
            for label in self.labels(row_path, row):
                if label in seen:
                    self.problem(
                        row_path,
                        f"row {label} appears twice in section '{section.name}'"
                        f" (first at line {seen[label]})",
                    )
                    continue
                seen[label] = self.line(row_path)
                self.row_lines[(section.name, label)] = seen[label]
                space += row.space_before
                before = len(self.problems)
                built = self.row(row_path, section, row, label, depth=len(rows) + space)
                if built is not None:
                    rows.append(built)
                if len(self.problems) > before:
                    break  # the entry's other rows would only repeat its problem
        section_map = None
        if section.map is not None:
            given = section.map
            section_map = SectionMap(
                origin=given.origin,
                seat_spacing=given.seat_spacing,
                row_spacing=given.row_spacing,
                radius=given.radius,
                rotation=given.rotation,
                align=given.align,
            )
        return LayoutSection(name=section.name, rows=tuple(rows), map=section_map)

    def labels(self, path: Path_, row: RowFile) -> list[str]:
        if (row.label is None) == (row.labels is None):
            self.problem(path, "a row needs one of label (one row) or labels (several alike: A-T)")
            return []
        if row.label is not None:
            return [row.label]
        labels = self.spec((*path, "labels"), expand_labels, row.labels)
        if labels is not None and len(labels) > 1 and row.positions is not None:
            self.problem(
                (*path, "positions"), "positions place one row: give each row of these labels its own entry"
            )
            return []
        return labels or []

    def row(
        self, path: Path_, section: SectionFile, row: RowFile, label: str, depth: float
    ) -> LayoutRow | None:
        where = f"row {label} of section '{section.name}'"
        if isinstance(row.seats, int) and not isinstance(row.seats, bool):
            self.problem(
                (*path, "seats"),
                f"seats: {row.seats} names one seat, numbered {row.seats}: write 1-{row.seats} for"
                f' {row.seats} seats, or quote it ("{row.seats}") for the one seat',
            )
            return None
        numbering = row.numbering or section.numbering or "consecutive"
        numbers = self.spec((*path, "seats"), expand_numbers, row.seats, numbering)
        if numbers is None:
            return None
        if row.skip is not None:
            skipped = self.spec((*path, "skip"), select_numbers, row.skip, numbers, "skip")
            if skipped is None:
                return None
            numbers = [n for n in numbers if n not in set(skipped)]
        if not numbers:
            self.problem(path, f"{where} has no seats")
            return None
        first: dict[str, int] = {}
        for number in numbers:
            if number in first:
                self.problem((*path, "seats"), f"seat {number} appears twice in {where}")
                return None
            first[number] = 1
        flags: dict[str, set[str]] = {}
        restricted = row.restricted_view if row.restricted_view is not None else section.restricted_view
        for name, value in (
            ("accessible", row.accessible),
            ("companion", row.companion),
            ("restricted_view", restricted),
        ):
            if isinstance(value, bool):
                flags[name] = set(numbers) if value else set()
                continue
            picked = self.spec((*path, name), select_numbers, value, numbers, name)
            if picked is None:
                return None
            flags[name] = set(picked)
        both = [n for n in numbers if n in flags["accessible"] and n in flags["companion"]]
        if both:
            self.problem((*path, "companion"), f"seat {both[0]} of {where} is both accessible and companion")
            return None
        for index, number in enumerate(numbers):
            if number not in flags["companion"]:
                continue
            beside = {numbers[i] for i in (index - 1, index + 1) if 0 <= i < len(numbers)}
            if not beside & flags["accessible"]:
                self.problem(
                    (*path, "companion"),
                    f"companion seat {number} of {where} is not beside an accessible seat",
                )
                return None
        gaps: list[str] = []
        if row.gap_after is not None:
            gaps = self.spec((*path, "gap_after"), select_numbers, row.gap_after, numbers, "gap_after") or []
        row_map: RowMap | None = None
        if row.positions is not None:
            if len(row.positions) != len(numbers):
                self.problem(
                    (*path, "positions"),
                    f"{len(row.positions)} positions for the {len(numbers)} seats of {where}",
                )
                return None
            positions = [(round(x, 2) + 0.0, round(y, 2) + 0.0) for x, y in row.positions]
            if any(abs(v) > MAX_COORDINATE for xy in positions for v in xy):
                self.problem((*path, "positions"), f"a position of {where} is beyond ±{MAX_COORDINATE:g}")
                return None
        elif section.map is None:
            self.problem(
                path,
                f"{where} has no positions, and section '{section.name}' has no map to place its seats by",
            )
            return None
        else:
            row_map = RowMap(
                direction=row.direction or section.direction or "left_to_right",
                gap_after=tuple(gaps),
                space_before=row.space_before,
                offset=row.offset,
            )
            given = section.map
            positions = row_positions(
                SectionMap(
                    given.origin,
                    given.seat_spacing,
                    given.row_spacing,
                    given.radius,
                    given.rotation,
                    given.align,
                ),
                depth,
                numbers,
                row_map,
            )
        seats = tuple(
            LayoutSeat(
                number=number,
                x=x,
                y=y,
                accessible=number in flags["accessible"],
                companion=number in flags["companion"],
                restricted_view=number in flags["restricted_view"],
            )
            for number, (x, y) in zip(numbers, positions, strict=True)
        )
        return LayoutRow(label=label, seats=seats, tier=row.tier or section.tier, map=row_map)

    def overlaps(self, layout: Layout) -> None:
        """Seats closer than ``MIN_SEAT_DISTANCE``, found through a grid of that size: each
        seat is compared with the seats already placed in its cell and the eight around it."""
        places = list(layout.seat_places())
        grid: dict[tuple[int, int], list[int]] = {}
        limit = MIN_SEAT_DISTANCE * MIN_SEAT_DISTANCE
        found = 0
        for index, (_, _, seat) in enumerate(places):
            cx, cy = math.floor(seat.x / MIN_SEAT_DISTANCE), math.floor(seat.y / MIN_SEAT_DISTANCE)
            for cell in ((cx + dx, cy + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)):
                for other in grid.get(cell, ()):
                    near = places[other][2]
                    if (seat.x - near.x) ** 2 + (seat.y - near.y) ** 2 < limit:
                        found += 1
                        if found <= MAX_OVERLAPS:
                            self.problems.append(self.overlap(places[index], places[other]))
            grid.setdefault((cx, cy), []).append(index)
        if found > MAX_OVERLAPS:
            self.problems.append((None, f"... and {found - MAX_OVERLAPS} more overlapping seats"))

    def overlap(
        self,
        one: tuple[LayoutSection, LayoutRow, LayoutSeat],
        other: tuple[LayoutSection, LayoutRow, LayoutSeat],
    ) -> tuple[int | None, str]:
        (section, row, seat), (other_section, other_row, near) = one, other
        line = self.row_lines.get((section.name, row.label))
        other_line = self.row_lines.get((other_section.name, other_row.label))
        return (
            line,
            f"seats overlap: {section.name} row {row.label} seat {seat.number} at ({seat.x:g}, {seat.y:g})"
            f" and {other_section.name} row {other_row.label} seat {near.number} (line {other_line})"
            f" at ({near.x:g}, {near.y:g}) are less than {MIN_SEAT_DISTANCE:g} apart",
        )


def parse_layout(text: str, source: str) -> Layout:
    """The layout ``text`` describes; ``source`` names it in problems (a file name).

    Raises:
        LayoutInvalid: the text is not a valid layout file; every problem found is listed, each
            with its line.
    """
    data, reader = _compose(text, source)
    if reader.problems:
        raise LayoutInvalid(source, _first(reader.problems))
    try:
        parsed = LayoutFile.model_validate(data)
    except ValidationError as error:
        raise LayoutInvalid(source, _first(_schema_problems(error, reader.lines))) from None
    builder = _Builder(source, reader.lines)
    layout = builder.layout(parsed)
    if builder.problems:
        raise LayoutInvalid(source, _first(builder.problems))
    return layout


def _first(problems: list[tuple[int | None, str]]) -> list[tuple[int | None, str]]:
    ordered = sorted(dict.fromkeys(problems), key=lambda p: (p[0] is None, p[0] or 0))
    if len(ordered) > MAX_PROBLEMS:
        rest = len(ordered) - MAX_PROBLEMS
        ordered = [*ordered[:MAX_PROBLEMS], (None, f"... and {rest} more problems")]
    return ordered


def read_layout(path: Path) -> Layout:
    """The layout in the file at ``path`` (YAML, or JSON for a ``.json`` name).

    Raises:
        LayoutInvalid: the file cannot be read, is too big, is not UTF-8, or is not a valid
            layout file.
    """
    source = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise LayoutInvalid(source, [(None, f"cannot read the file: {error.strerror or error}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise LayoutInvalid(source, [(None, f"the file is larger than {MAX_FILE_BYTES // 1_000_000} MB")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise LayoutInvalid(source, [(line, "the file is not UTF-8 text")]) from None
    if path.suffix.lower() == ".json":
        # JSON is YAML, but for tabs: YAML does not indent with them. A raw tab can only be
        # white space in valid JSON (never inside a string), so spaces mean the same.
        text = text.replace("\t", " ")
    return parse_layout(text, source)


# --- writing ---------------------------------------------------------------------------------


class _Flow(list[Any]):
    """A list written on one line: ``[1, 30]``."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Items of a list indented under their key, as people write them.
        super().increase_indent(flow, False)


_Dumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_sequence(f"{_TAG}seq", data, flow_style=True)
)

HEADER = (
    "# A Boxoffice venue layout (the format: docs/catalog.md).\n"
    "# Check it with `boxoffice catalog validate FILE`, load it with `boxoffice catalog import FILE`.\n"
)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _token(number: str) -> int | str:
    return int(number) if number.isdigit() and str(int(number)) == number else number


def _picked(picked: list[str], numbers: list[str]) -> bool | _Flow:
    """How a row's flag is written: true for every seat, else the seats, as runs of the row's
    seats where a range says exactly them."""
    if len(picked) == len(numbers):
        return True
    chosen = set(picked)
    written: list[int | str] = []
    index = 0
    while index < len(numbers):
        if numbers[index] not in chosen:
            index += 1
            continue
        end = index
        while end + 1 < len(numbers) and numbers[end + 1] in chosen:
            end += 1
        run = numbers[index : end + 1]
        numeric = all(n.isdigit() and str(int(n)) == n for n in run)
        if len(run) > 2 and numeric and int(run[0]) < int(run[-1]):
            low, high = int(run[0]), int(run[-1])
            inside = [n for n in numbers if n.isdigit() and low <= int(n) <= high]
            if inside == run:
                written.append(f"{low}-{high}")
                index = end + 1
                continue
        written.extend(_token(n) for n in run)
        index = end + 1
    try:
        if select_numbers(list(written), numbers, "flag") == picked:
            return _Flow(written)
    except SpecError:
        pass
    return _Flow(_token(n) for n in picked)


def _row_entry(
    row: LayoutRow, section: LayoutSection, depth: float, tier: str | None, restricted: bool
) -> dict[str, Any]:
    numbers = [seat.number for seat in row.seats]
    spec, numbering = compress_numbers(numbers)
    entry: dict[str, Any] = {"seats": spec}
    if numbering != "consecutive":
        entry["numbering"] = numbering
    placed = (
        row.map is not None
        and section.map is not None
        and row_positions(section.map, depth, numbers, row.map) == [(seat.x, seat.y) for seat in row.seats]
    )
    if placed and row.map is not None:
        if row.map.direction != "left_to_right":
            entry["direction"] = row.map.direction
        if row.map.gap_after:
            entry["gap_after"] = _Flow(_token(n) for n in row.map.gap_after)
        if row.map.space_before:
            entry["space_before"] = _number(row.map.space_before)
        if row.map.offset:
            entry["offset"] = _number(row.map.offset)
    if row.tier != tier:
        entry["tier"] = row.tier
    for name in ("accessible", "companion", "restricted_view"):
        picked = [seat.number for seat in row.seats if getattr(seat, name)]
        if name == "restricted_view" and restricted:
            continue
        if picked:
            entry[name] = _picked(picked, numbers)
    if not placed:
        entry["positions"] = [_Flow([_number(seat.x), _number(seat.y)]) for seat in row.seats]
    return entry


def _section_entry(section: LayoutSection) -> dict[str, Any]:
    tiers = {row.tier for row in section.rows}
    tier = next(iter(tiers)) if len(tiers) == 1 else None
    restricted = all(seat.restricted_view for row in section.rows for seat in row.seats)
    entry: dict[str, Any] = {"name": section.name}
    if tier is not None:
        entry["tier"] = tier
    if restricted:
        entry["restricted_view"] = True
    if section.map is not None:
        given = section.map
        written: dict[str, Any] = {
            "origin": _Flow([_number(given.origin[0]), _number(given.origin[1])]),
            "seat_spacing": _number(given.seat_spacing),
            "row_spacing": _number(given.row_spacing),
        }
        if given.radius is not None:
            written["radius"] = _number(given.radius)
        if given.rotation:
            written["rotation"] = _number(given.rotation)
        if given.align != "centre":
            written["align"] = given.align
        entry["map"] = written
    groups: list[tuple[list[str], dict[str, Any]]] = []
    space = 0.0
    for index, row in enumerate(section.rows):
        space += row.map.space_before if row.map is not None else 0.0
        body = _row_entry(row, section, index + space, tier, restricted)
        if groups and "positions" not in body and groups[-1][1] == body:
            groups[-1][0].append(row.label)
        else:
            groups.append(([row.label], body))
    rows: list[dict[str, Any]] = []
    for labels, body in groups:
        spec = compress_labels(labels) if len(labels) > 1 else None
        if spec is not None:
            rows.append({"labels": spec, **body})
        else:
            rows.extend({"label": label, **body} for label in labels)
    entry["rows"] = rows
    return entry


def layout_document(layout: Layout) -> dict[str, Any]:
    """``layout`` as the file's mapping: runs of alike rows merged under ``labels``, a row's
    positions left out where its section's map places it exactly there.

    Raises:
        SpecError: a seat number no spec can write (not one a layout file could have made).
    """
    venue = layout.venue
    document: dict[str, Any] = {
        "venue": {
            "slug": venue.slug,
            "name": venue.name,
            "address": venue.address,
            "city": venue.city,
            "country": venue.country,
            "latitude": venue.latitude,
            "longitude": venue.longitude,
            "timezone": venue.timezone,
        },
        "layout": layout.name,
    }
    if not venue.address:
        del document["venue"]["address"]
    if layout.tiers:
        document["tiers"] = _Flow(layout.tiers)
    if layout.sections:
        document["sections"] = [_section_entry(section) for section in layout.sections]
    if layout.ga_areas:
        document["ga_areas"] = [
            {"name": area.name, "capacity": area.capacity, **({"tier": area.tier} if area.tier else {})}
            for area in layout.ga_areas
        ]
    return document


def dump_layout(layout: Layout) -> str:
    """The layout file for ``layout``: ``parse_layout`` of it gives ``layout`` back.

    Raises:
        SpecError: see ``layout_document``.
    """
    body = yaml.dump(
        layout_document(layout),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return HEADER + body
