"""Seat numbering, row labels and seat-map positions of layout files.

Expanding what a person writes (``1-30``, odd numbering, ``A-H, J-T``, a curved section) into
seats, and compressing seats back into that shorthand for export. Pure functions, no
database: ``booking.catalog.layout_file`` reads files with them and
``booking.catalog.layouts`` writes them.

Invariants:
- ``expand_numbers(*compress_numbers(numbers)) == numbers`` for every list of seat numbers
  that ``expand_numbers`` can produce, and the same for labels (``compress_labels``).
- ``row_positions`` depends only on its arguments, and rounds to ``PRECISION`` decimals, so
  positions generated twice from one file compare equal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

Numbering = Literal["consecutive", "odd", "even"]
Direction = Literal["left_to_right", "right_to_left"]
Align = Literal["centre", "left", "right"]
NumbersSpec = str | int | list[str | int]

MAX_SEATS_PER_ROW = 1000
MAX_ROWS_PER_ENTRY = 500
MAX_LABEL = 16
# Map positions are kept to this many decimals: enough for any drawing, and exact to compare.
PRECISION = 2

_NUMBER = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)\s*-\s*([0-9]+)")
# A seat number or row label that is not a plain number: "12A", "W1", "AA". No commas, no
# dashes (those write ranges), no spaces.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9./']*")
_LETTERS = re.compile(r"[A-Z]{1,3}")
_LETTER_RANGE = re.compile(r"([A-Z]{1,3})\s*-\s*([A-Z]{1,3})")


class SpecError(ValueError):
    """A numbering, label or flag spec that means nothing; the message says why, for people."""


def _tokens(spec: NumbersSpec, what: str) -> list[str]:
    items = spec if isinstance(spec, list) else [spec]
    tokens: list[str] = []
    for item in items:
        for part in str(item).split(","):
            token = part.strip()
            if not token:
                raise SpecError(f"empty item in {what} {spec!r}")
            tokens.append(token)
    if not tokens:
        raise SpecError(f"no {what} given")
    return tokens


def _range(token: str) -> tuple[int, int] | None:
    found = _RANGE.fullmatch(token)
    if found is None:
        return None
    first, last = int(found.group(1)), int(found.group(2))
    if first > last:
        raise SpecError(
            f"range {token} runs backwards: write {last}-{first} (and direction: right_to_left"
            " if the numbers run right to left on the map)"
        )
    return first, last


def _parity_ok(number: int, numbering: Numbering) -> bool:
    return numbering == "consecutive" or (number % 2 == 1) == (numbering == "odd")


def expand_numbers(spec: NumbersSpec, numbering: Numbering = "consecutive") -> list[str]:
    """The seat numbers ``spec`` names, in order: ``"1-10, 12, 14A"`` or a list of such items.
    With odd or even numbering a range steps by two and its ends must be odd (even).

    Raises:
        SpecError: an empty item, a range that runs backwards, a number of the wrong parity,
            a name that is not a seat number, or more than ``MAX_SEATS_PER_ROW`` seats.
    """
    step = 1 if numbering == "consecutive" else 2
    numbers: list[str] = []
    for token in _tokens(spec, "seat numbers"):
        bounds = _range(token)
        if bounds is not None:
            first, last = bounds
            for end in (first, last):
                if not _parity_ok(end, numbering):
                    raise SpecError(f"{numbering} numbering, but range {token} has {end} at one end")
            if (last - first) // step + len(numbers) >= MAX_SEATS_PER_ROW:
                raise SpecError(f"more than {MAX_SEATS_PER_ROW} seats in one row")
            numbers.extend(str(n) for n in range(first, last + 1, step))
        elif _NUMBER.fullmatch(token):
            if not _parity_ok(int(token), numbering):
                raise SpecError(f"{numbering} numbering, but seat {int(token)} is not {numbering}")
            numbers.append(str(int(token)))
        elif _NAME.fullmatch(token) and len(token) <= MAX_LABEL:
            numbers.append(token)
        elif "-" in token:
            raise SpecError(f"bad range {token!r}: a range is two numbers, like 1-20")
        else:
            raise SpecError(f"bad seat number {token!r}: letters and digits, at most {MAX_LABEL}")
        if len(numbers) > MAX_SEATS_PER_ROW:
            raise SpecError(f"more than {MAX_SEATS_PER_ROW} seats in one row")
    return numbers


def select_numbers(spec: NumbersSpec, numbers: list[str], what: str) -> list[str]:
    """The seats of a row (``numbers``) that ``spec`` picks, in the row's order: a single
    number must be one of the row's; a range ``a-b`` picks every numbered seat from a to b
    (so ``1-9`` in an odd-numbered row is 1, 3, 5, 7, 9).

    Raises:
        SpecError: a number the row does not have, or a range that picks none.
    """
    present = set(numbers)
    picked: set[str] = set()
    for token in _tokens(spec, what):
        bounds = _range(token)
        if bounds is not None:
            first, last = bounds
            inside = {n for n in numbers if _NUMBER.fullmatch(n) and first <= int(n) <= last}
            if not inside:
                raise SpecError(f"{what}: the row has no seat from {first} to {last}")
            picked |= inside
            continue
        number = str(int(token)) if _NUMBER.fullmatch(token) else token
        if number not in present:
            raise SpecError(f"{what}: the row has no seat {token}")
        picked.add(number)
    return [n for n in numbers if n in picked]


def _runs(values: list[int], step: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and value == runs[-1][1] + step:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _write_runs(runs: list[tuple[int, int]]) -> list[str]:
    return [str(a) if a == b else f"{a}-{b}" for a, b in runs]


def compress_numbers(numbers: list[str]) -> tuple[str, Numbering]:
    """The shortest ``(spec, numbering)`` that ``expand_numbers`` turns back into ``numbers``.

    Raises:
        SpecError: ``numbers`` is empty, or holds a number no spec can write (a dash or a comma
            in it, say).
    """
    if not numbers:
        raise SpecError("a row with no seats cannot be written")
    candidates: list[tuple[str, Numbering]] = []
    if all(_NUMBER.fullmatch(n) and str(int(n)) == n for n in numbers):
        values = [int(n) for n in numbers]
        parities: tuple[tuple[Numbering, int], ...] = (("odd", 1), ("even", 0))
        for numbering, parity in parities:
            if len(values) > 1 and all(v % 2 == parity for v in values):
                candidates.append((", ".join(_write_runs(_runs(values, 2))), numbering))
    pieces: list[str] = []
    run: list[int] = []
    for number in [*numbers, ""]:
        if number and _NUMBER.fullmatch(number) and str(int(number)) == number:
            value = int(number)
            if run and value != run[-1] + 1:
                pieces.extend(_write_runs(_runs(run, 1)))
                run = []
            run.append(value)
            continue
        if run:
            pieces.extend(_write_runs(_runs(run, 1)))
            run = []
        if number:
            pieces.append(number)
    candidates.append((", ".join(pieces), "consecutive"))
    spec, numbering = min(candidates, key=lambda c: (len(c[0]), c[1] != "consecutive"))
    try:
        if expand_numbers(spec, numbering) == numbers:
            return spec, numbering
    except SpecError:
        pass
    raise SpecError(f"seat numbers {', '.join(numbers)} cannot be written in a layout file")


def label_index(label: str) -> int | None:
    """A = 0, B = 1, ... Z = 25, AA = 26, as printed on seat rows; None for other labels."""
    if not _LETTERS.fullmatch(label):
        return None
    index = 0
    for letter in label:
        index = index * 26 + (ord(letter) - ord("A") + 1)
    return index - 1


def label_at(index: int) -> str:
    """The label of row ``index`` (0 is A; 26 is AA)."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def expand_labels(spec: str) -> list[str]:
    """Row labels from ``"A-H, J-T"`` (letter ranges run A...Z, AA...) or ``"1-25"``.

    Raises:
        SpecError: an empty item, a range that mixes letters and numbers or runs backwards, a
            label that is too long, or more than ``MAX_ROWS_PER_ENTRY`` rows.
    """
    labels: list[str] = []
    for token in _tokens(spec, "row labels"):
        letters = _LETTER_RANGE.fullmatch(token)
        numbers = _RANGE.fullmatch(token)
        if letters is not None:
            first, last = (label_index(letters.group(i)) for i in (1, 2))
            assert first is not None
            assert last is not None
            if first > last:
                raise SpecError(f"row range {token} runs backwards")
            if last - first + len(labels) >= MAX_ROWS_PER_ENTRY:
                raise SpecError(f"more than {MAX_ROWS_PER_ENTRY} rows in one entry")
            labels.extend(label_at(i) for i in range(first, last + 1))
        elif numbers is not None:
            first, last = _range(token) or (0, 0)
            if last - first + len(labels) >= MAX_ROWS_PER_ENTRY:
                raise SpecError(f"more than {MAX_ROWS_PER_ENTRY} rows in one entry")
            labels.extend(str(n) for n in range(first, last + 1))
        elif "-" in token:
            raise SpecError(f"bad row range {token!r}: write A-T or 1-25")
        elif _NAME.fullmatch(token) and len(token) <= MAX_LABEL:
            labels.append(str(int(token)) if _NUMBER.fullmatch(token) else token)
        else:
            raise SpecError(f"bad row label {token!r}: letters and digits, at most {MAX_LABEL}")
        if len(labels) > MAX_ROWS_PER_ENTRY:
            raise SpecError(f"more than {MAX_ROWS_PER_ENTRY} rows in one entry")
    return labels


def compress_labels(labels: list[str]) -> str | None:
    """The shortest spec ``expand_labels`` turns back into ``labels``; None when there is none
    (a label with a space or a dash in it, say)."""
    pieces: list[str] = []
    index = 0
    while index < len(labels):
        label = labels[index]
        letters = label_index(label)
        number = int(label) if _NUMBER.fullmatch(label) and str(int(label)) == label else None
        end = index
        while end + 1 < len(labels):
            following = labels[end + 1]
            step = end + 1 - index
            by_letter = letters is not None and label_index(following) == letters + step
            if not (by_letter or (number is not None and following == str(number + step))):
                break
            end += 1
        pieces.append(label if end == index else f"{label}-{labels[end]}")
        index = end + 1
    spec = ", ".join(pieces)
    try:
        return spec if expand_labels(spec) == labels else None
    except SpecError:
        return None


@dataclass(frozen=True)
class SectionMap:
    """How a section's seats are placed on the seat map when the file gives no positions.

    Rows are drawn one behind the other, ``row_spacing`` apart, the first with its centre (or
    its left or right end, by ``align``) at ``origin``; seats ``seat_spacing`` apart along the
    row. With a ``radius`` the rows are arcs around a point ``radius`` in front of the first
    row (the stage), each row's arc that much wider, seats still ``seat_spacing`` apart along
    it. ``rotation`` turns the section about ``origin``, in degrees clockwise (map y grows
    downwards, origin top left)."""

    origin: tuple[float, float]
    seat_spacing: float = 10.0
    row_spacing: float = 12.0
    radius: float | None = None
    rotation: float = 0.0
    align: Align = "centre"

    def as_json(self) -> dict[str, Any]:
        return {
            "origin": [float(self.origin[0]), float(self.origin[1])],
            "seat_spacing": float(self.seat_spacing),
            "row_spacing": float(self.row_spacing),
            "radius": None if self.radius is None else float(self.radius),
            "rotation": float(self.rotation),
            "align": self.align,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SectionMap:
        x, y = data["origin"]
        radius = data.get("radius")
        return cls(
            origin=(float(x), float(y)),
            seat_spacing=float(data.get("seat_spacing", 10.0)),
            row_spacing=float(data.get("row_spacing", 12.0)),
            radius=None if radius is None else float(radius),
            rotation=float(data.get("rotation", 0.0)),
            align=data.get("align", "centre"),
        )


@dataclass(frozen=True)
class RowMap:
    """A row's own placing within its section's map: which way its numbers run, the aisles in
    it (a seat's width after each seat named in ``gap_after``), extra rows of space before it
    (a cross aisle), and a shift along the row, in seats."""

    direction: Direction = "left_to_right"
    gap_after: tuple[str, ...] = ()
    space_before: float = 0.0
    offset: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """Only what differs from the defaults, so a plain row stores ``{}``."""
        data: dict[str, Any] = {}
        if self.direction != "left_to_right":
            data["direction"] = self.direction
        if self.gap_after:
            data["gap_after"] = list(self.gap_after)
        if self.space_before:
            data["space_before"] = float(self.space_before)
        if self.offset:
            data["offset"] = float(self.offset)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RowMap:
        return cls(
            direction=data.get("direction", "left_to_right"),
            gap_after=tuple(str(n) for n in data.get("gap_after", ())),
            space_before=float(data.get("space_before", 0.0)),
            offset=float(data.get("offset", 0.0)),
        )


def row_positions(
    section: SectionMap, depth: float, numbers: list[str], row: RowMap
) -> list[tuple[float, float]]:
    """Map positions of a row's seats, in the order of ``numbers``. ``depth`` is how many row
    spacings the row is behind the section's first row (its index, plus the space before it
    and before every row in front of it)."""
    gaps = set(row.gap_after)
    slots: list[float] = []
    slot = 0.0
    for k in range(len(numbers)):
        if k and numbers[k - 1] in gaps:
            slot += 1
        slots.append(slot)
        slot += 1
    span = slots[-1] if slots else 0.0
    if row.direction == "right_to_left":
        slots = [span - s for s in slots]
    shift = {"centre": -span / 2, "left": 0.0, "right": -span}[section.align] + row.offset
    distance = depth * section.row_spacing
    turn = math.radians(section.rotation)
    cos, sin = math.cos(turn), math.sin(turn)
    ox, oy = section.origin
    positions: list[tuple[float, float]] = []
    for s in slots:
        along = (s + shift) * section.seat_spacing
        if section.radius is None:
            lx, ly = along, distance
        else:
            arc = section.radius + distance
            angle = along / arc
            lx, ly = arc * math.sin(angle), arc * math.cos(angle) - section.radius
        x = ox + lx * cos - ly * sin
        y = oy + lx * sin + ly * cos
        positions.append((round(x, PRECISION) + 0.0, round(y, PRECISION) + 0.0))
    return positions
