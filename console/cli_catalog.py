"""`boxoffice catalog`: venues and their seating layouts as files a person writes and reviews.

``validate FILE`` checks a layout file without a database; ``import FILE [--dry-run]`` makes
the database say what the file says (``booking.catalog.layouts.import_layout``: the same file
twice changes nothing; removing a seat any event has held or sold is refused, naming it);
``export VENUE`` writes a stored layout back as a file, which imports as no change;
``venues`` lists the venues and their layouts. The format is in docs/catalog.md.

Exit codes, as every command's (``console/cli_common.py``): 0 done; 1 refused or failed (an
unknown venue, a change that would remove sold seats, an unreachable database); 2 bad usage,
which includes a layout file that is missing or not valid (each problem on stderr as
``FILE:LINE: what``, or with ``--json`` a document on stdout); 3 nothing to do (an import
that changes nothing). An import that changes something is audited in the same transaction
(actor: the person at this terminal); one that is refused leaves a ``failed`` row.

Loading this module imports Typer only; each command imports what it runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from console.cli_common import (
    USAGE,
    Column,
    JsonOption,
    YesOption,
    confirm,
    count,
    err,
    fail,
    nothing,
    plain,
    print_json,
    record,
    report,
    say,
    settings_of,
    show,
    with_session,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from booking.catalog.layout_file import Layout
    from booking.catalog.layouts import ImportResult, LayoutSummary
    from booking.errors import LayoutInvalid

catalog_app = typer.Typer(help="Venues and seating layouts as files.", no_args_is_help=True)

FileArgument = Annotated[
    Path, typer.Argument(metavar="FILE", help="A layout file: YAML, or JSON for a .json name.")
]


def _invalid(error: LayoutInvalid, as_json: bool) -> NoReturn:
    """Every problem of a layout file, and exit 2."""
    if as_json:
        print_json({"valid": False, "problems": error.extra["problems"]})
        raise typer.Exit(USAGE)
    problems = count(len(error.lines), "problem")
    err.print(
        f"boxoffice: {error.source} is not a valid layout file ({problems}):",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for line in error.lines:
        err.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(USAGE)


def _read(path: Path, as_json: bool) -> Layout:
    from booking.catalog.layout_file import read_layout
    from booking.errors import LayoutInvalid

    try:
        return read_layout(path)
    except LayoutInvalid as error:
        _invalid(error, as_json)


def _summary(layout: Layout) -> dict[str, Any]:
    seats = [seat for _, _, seat in layout.seat_places()]
    return {
        "venue": layout.venue.slug,
        "venue_name": layout.venue.name,
        "layout": layout.name,
        "tiers": list(layout.tiers),
        "sections": len(layout.sections),
        "rows": sum(len(section.rows) for section in layout.sections),
        "seats": layout.seats,
        "ga_areas": len(layout.ga_areas),
        "ga_places": layout.ga_places,
        "places": layout.places,
        "accessible": sum(seat.accessible for seat in seats),
        "companion": sum(seat.companion for seat in seats),
        "restricted_view": sum(seat.restricted_view for seat in seats),
    }


@catalog_app.command("validate")
def catalog_validate(file: FileArgument, as_json: JsonOption = False) -> None:
    """Check a layout file; the database is not touched. Exit 0 when it is valid, 2 when it
    is not, with every problem found named by its line."""
    layout = _read(file, as_json)
    facts = _summary(layout)
    report(
        as_json,
        {"valid": True, "file": str(file), **facts},
        f"{file}: valid. {layout.venue.name} ({layout.venue.slug}), layout {layout.name}:"
        f" {count(facts['sections'], 'section')}, {count(facts['rows'], 'row')},"
        f" {count(layout.seats, 'seat')}, {count(layout.ga_places, 'GA place')};"
        f" {count(layout.places, 'place')} in all ({facts['accessible']} accessible,"
        f" {facts['companion']} companion, {facts['restricted_view']} restricted view).",
    )


def _counted(result: ImportResult) -> str:
    said = []
    for kind, noun in (("sections", "section"), ("rows", "row"), ("seats", "seat"), ("ga_areas", "GA area")):
        changes = result.counts[kind]
        done = [f"{n} {change}" for change, n in changes.items() if n]
        if done:
            said.append(f"{noun}s {', '.join(done)}")
    return "; ".join(said)


def _import_lines(result: ImportResult, file: Path) -> list[str]:
    head = f"{result.venue}, layout {result.layout}"
    if result.dry_run:
        head = f"dry run, nothing was changed: {head} would change"
    lines = [f"{head}: {_counted(result) or 'venue or layout details only'}"]
    lines.extend(f"  {line}" for line in result.changes)
    lines.append(
        f"{file}: {count(result.seats, 'seat')} and {count(result.ga_places, 'GA place')}"
        f" ({count(result.places, 'place')})."
    )
    added = result.counts["seats"]["added"] + result.counts["ga_areas"]["added"]
    if result.events and added:
        lines.append(
            f"{count(result.events, 'event')} already on this layout keep their tickets as they are:"
            " places added here are not on sale at them."
        )
    return lines


@catalog_app.command("import")
def catalog_import(
    ctx: typer.Context,
    file: FileArgument,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would change, and change nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create or update a venue and its layout from a layout file. Importing the same file
    again changes nothing (exit 3); a change that would remove seats an event has held or
    sold, now or before, is refused whole and names them (exit 1)."""
    from booking.catalog import layouts
    from booking.errors import LayoutChangeRefused
    from booking.ops.models import Outcome

    layout = _read(file, as_json)
    settings = settings_of(ctx)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()

    def audit(result: ImportResult | None, problem: LayoutChangeRefused | None = None) -> dict[str, Any]:
        facts: dict[str, Any] = {"file": file.name, "sha256": digest, "layout": layout.name}
        if result is not None:
            facts.update(
                venue_change=result.venue_change, layout_change=result.layout_change, counts=result.counts
            )
        if problem is not None:
            facts.update(problem=problem.code, places=problem.places[:50])
        return facts

    async def work(session: AsyncSession) -> ImportResult:
        try:
            result = await layouts.import_layout(session, layout, dry_run=dry_run)
        except LayoutChangeRefused as refused:
            await session.rollback()
            if not dry_run:
                await record(
                    session,
                    action="layout.import",
                    outcome=Outcome.FAILED,
                    target_type="venue",
                    target_id=layout.venue.slug,
                    details=audit(None, refused),
                )
            raise
        if dry_run or not result.changed:
            await session.rollback()
            return result
        await record(
            session,
            action="layout.import",
            outcome=Outcome.OK,
            target_type="venue",
            target_id=layout.venue.slug,
            details=audit(result),
        )
        return result

    result = with_session(settings, work, f"{file}")
    if not result.changed:
        nothing(
            f"{result.venue}, layout {result.layout}: nothing changed ({file} is what is stored)",
            as_json,
            result,
        )
    report(as_json, result, *_import_lines(result, file))


@catalog_app.command("export")
def catalog_export(
    ctx: typer.Context,
    venue: Annotated[str, typer.Argument(metavar="VENUE", help="Venue slug or id.")],
    layout: Annotated[
        str | None, typer.Option("--layout", "-l", help="Layout name [default: the venue's only one].")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file [default: stdout].")
    ] = None,
    yes: YesOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Write the layout file as JSON instead of YAML.")
    ] = False,
) -> None:
    """Write a stored layout as a layout file: importing it back changes nothing."""
    from booking.catalog import layouts
    from booking.catalog.layout_file import layout_document

    settings = settings_of(ctx)
    if output is not None and output.exists():
        confirm(f"Overwrite {output}?", yes)

    async def work(session: AsyncSession) -> str:
        if not as_json:
            return await layouts.export_layout(session, venue, layout)
        document = layout_document(await layouts.stored_layout(session, venue, layout))
        return json.dumps(plain(document), indent=2, ensure_ascii=False) + "\n"

    text = with_session(settings, work, f"venue {venue}")
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {output}: {error.strerror or error}")
    say(f"wrote {output}")


@catalog_app.command("venues")
def catalog_venues(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every venue and layout, with its seats, GA places and events."""
    from booking.catalog import layouts

    async def work(session: AsyncSession) -> list[LayoutSummary]:
        return await layouts.list_layouts(session)

    show(
        with_session(settings_of(ctx), work),
        [
            Column("venue", "Venue"),
            Column("layout", "Layout"),
            Column("city", "City"),
            Column("seats", "Seats"),
            Column("ga_places", "GA places"),
            Column("places", "Places"),
            Column("events", "Events"),
        ],
        as_json=as_json,
        title="Venues and layouts",
        empty="No venues yet: `boxoffice catalog import FILE` adds one.",
    )
