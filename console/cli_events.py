"""`boxoffice events`: from a venue to an event on sale, and on to cancelled.

The same ``booking.catalog.admin`` verbs as the staff API's ``/staff/catalog`` routes: each
command renders a table or lines for people and JSON for scripts (``--json``), asks before an
act fans feel (``--yes`` for scripts; a cancellation says how many orders it refunds), and
writes an audit row for every change it makes or is refused (actor: the person at this
terminal). Exit codes are those of ``console/cli_common.py``.

Tiers on the command line, one ``--tier`` each: ``NAME=PRICE@WHAT[,WHAT...]``, the price in
the currency's units (``85`` or ``85.00``), each WHAT a section name, ``row:SECTION/ROW``,
``seat:ID``, or ``ga:AREA`` (``ga:AREA*200`` for 200 of its places). A tiers file (``--tiers
FILE``, JSON: a list of ``{"name", "price_minor", "sections", "rows", "seat_ids", "ga_area",
"quantity"}``) says the same for larger layouts.

The booking services are imported inside each command, so that loading this module costs
nothing but Typer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from console.cli_common import (
    ID,
    PROSE,
    USAGE,
    Column,
    JsonOption,
    YesOption,
    audited,
    confirm,
    count,
    fail,
    report,
    say,
    settings_of,
    show,
    when,
    with_session,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from booking.catalog import admin
    from booking.catalog.pricing import TierSpec
    from booking.settings import Settings

events_app = typer.Typer(
    help="Create events on a venue, price them, put them on sale, cancel them.", no_args_is_help=True
)

EventArgument = Annotated[str, typer.Argument(metavar="EVENT", help="Event id or slug.")]
TierOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tier",
        metavar="NAME=PRICE@WHAT[,WHAT...]",
        help="A tier: WHAT is a section name, row:SECTION/ROW, seat:ID or ga:AREA[*N]. Repeat for each.",
    ),
]
TiersFileOption = Annotated[
    Path | None,
    typer.Option("--tiers", metavar="FILE", help="The tiers as JSON (a list of tier objects).", exists=False),
]
PriceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--price",
        metavar="TIER=PRICE",
        help="A price for one of the tiers the layout declares (instead of --tier). Repeat for each.",
    ),
]
WhenHelp = "ISO date and time; without an offset, the venue's own time (e.g. 2027-03-01T19:30)."


def _moment(text: str | None, name: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date and time (e.g. 2027-03-01T19:30)", param_hint=name
        ) from None


def _spec(tier: dict[str, Any]) -> TierSpec:
    """The API's tier object (``console.tier_syntax``) as the service's."""
    from booking.catalog.pricing import RowRef, TierSpec

    return TierSpec(
        name=tier["name"],
        price_minor=tier["price_minor"],
        sections=tuple(tier.get("sections", ())),
        rows=tuple(RowRef(r["section"], r["row"]) for r in tier.get("rows", ())),
        seat_ids=tuple(tier.get("seat_ids", ())),
        ga_area=tier.get("ga_area"),
        quantity=tier.get("quantity"),
    )


def _minor(price: str, currency: str, where: str) -> int:
    from console.tier_syntax import SyntaxProblem, price_minor

    try:
        return price_minor(price, currency)
    except SyntaxProblem as problem:
        raise typer.BadParameter(str(problem), param_hint=where) from None


def parse_tier(text: str, currency: str) -> TierSpec:
    """One ``--tier`` (see the module's docstring).

    Raises:
        typer.BadParameter: not of that form (exit 2).
    """
    from console.tier_syntax import SyntaxProblem
    from console.tier_syntax import parse_tier as parsed

    try:
        return _spec(parsed(text, currency))
    except SyntaxProblem as problem:
        raise typer.BadParameter(str(problem), param_hint="--tier") from None


def _tiers_file(path: Path) -> tuple[TierSpec, ...]:
    import msgspec

    from api.routes.catalog import Tiers  # the API's own schema: one definition of a tier

    try:
        parsed = msgspec.json.decode(path.read_bytes(), type=Tiers)
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="--tiers") from None
    except msgspec.ValidationError as error:
        raise typer.BadParameter(f"{path}: {error}", param_hint="--tiers") from None
    return tuple(_spec(msgspec.to_builtins(tier)) for tier in parsed)


def _layout_prices(price: list[str] | None, currency: str | None) -> dict[str, int] | None:
    if not price:
        return None
    if currency is None:
        fail("--currency is needed to read --price amounts (e.g. --currency GBP)", code=USAGE)
    prices: dict[str, int] = {}
    for text in price:
        name, eq, amount = text.rpartition("=")
        if not eq or not name.strip():
            raise typer.BadParameter(f"{text!r} is not TIER=PRICE", param_hint="--price")
        prices[name.strip()] = _minor(amount, currency, "--price")
    return prices


def _tiers(tier: list[str] | None, tiers_file: Path | None, currency: str | None) -> tuple[TierSpec, ...]:
    if tier and tiers_file is not None:
        fail("give --tier options or a --tiers file, not both", code=USAGE)
    if tiers_file is not None:
        return _tiers_file(tiers_file)
    if not tier:
        return ()
    if currency is None:
        fail("--currency is needed to read --tier prices (e.g. --currency GBP)", code=USAGE)
    return tuple(parse_tier(text, currency) for text in tier)


def _override(text: str | None, name: str) -> int | str | None:
    """An override option: a number, or ``default`` for the configured value (None);
    ``"unset"`` when not given."""
    if text is None:
        return "unset"
    if text.strip().lower() == "default":
        return None
    if not text.strip().isdigit():
        raise typer.BadParameter(f"{text!r} is a number or 'default'", param_hint=name)
    return int(text)


def _limits(settings: Settings) -> Any:
    from booking.holds.policy import HoldPolicy

    return HoldPolicy.from_settings(settings)


def _event_lines(view: admin.EventAdminView) -> list[str]:
    from booking.money import money

    lines = [
        f"{view.title} ({view.slug}, {view.id})",
        f"  {view.performer} · {view.category} · {view.venue_name}, {view.city} · layout {view.layout_name}",
        f"  starts {when(view.starts_at)}, ends {when(view.ends_at)} ({view.timezone})",
        f"  on sale {when(view.onsale_starts_at)} to {when(view.onsale_ends_at)}",
        f"  status {view.status}, now {view.phase.replace('_', ' ')}",
        f"  {view.places} places, {view.sold} sold, {view.held} held;"
        f" {count(view.paid_orders, 'paid order')}",
        "  per-fan cap "
        + (str(view.max_tickets_per_fan) if view.max_tickets_per_fan else "as configured")
        + ", holds last "
        + (f"{view.hold_ttl_seconds} s" if view.hold_ttl_seconds else "as configured"),
    ]
    for tier in view.tiers:
        covers = ", ".join(f"{c.name} ({c.places})" for c in tier.covers)
        lines.append(
            f"  tier {tier.name}: {money(tier.price_minor, tier.currency)}, {tier.places} places"
            f" ({tier.available} left) — {covers}"
        )
    return lines


def _show(settings: Settings, event_id: uuid.UUID, as_json: bool) -> None:
    from booking.catalog import admin

    async def read(session: AsyncSession) -> admin.EventAdminView:
        return await admin.get_event(session, event_id)

    view = with_session(settings, read)
    report(as_json, view, *_event_lines(view))


def _change(
    settings: Settings,
    ref: str,
    action: str,
    act: Any,
    details: Any,
) -> Any:
    """Resolve ``ref``, run ``act(session, event_id)`` audited as ``action``, commit."""
    from booking.ops import reads

    async def work(session: AsyncSession) -> Any:
        async def step() -> Any:
            event_id = await reads.resolve_event(session, ref)
            return event_id, await act(session, event_id)

        return await audited(
            session,
            step,
            action=action,
            target_type="event",
            target_id=ref,
            details=lambda done: {"target_id": str(done[0]), **details(done[1])},
        )

    return with_session(settings, work, f"event {ref}")


# --- reading ------------------------------------------------------------------------------


@events_app.command("venues")
def events_venues(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Venues and their layouts: what an event is created on."""
    from booking.catalog import admin

    async def work(session: AsyncSession) -> list[admin.VenueRow]:
        return await admin.list_venues(session)

    venues = with_session(settings_of(ctx), work)
    rows = [
        {
            "venue": v.slug,
            "name": v.name,
            "city": v.city,
            "layout": layout.name,
            "seats": layout.seats,
            "ga": layout.ga_places,
            "sections": ", ".join(layout.sections),
            "areas": ", ".join(layout.ga_areas),
            "tiers": ", ".join(layout.tiers),
        }
        for v in venues
        for layout in v.layouts or ()
    ]
    if as_json:
        report(True, {"items": venues})
        return
    show(
        rows,
        [
            Column("venue", "Venue", ID),
            Column("name", "Name", PROSE),
            Column("city", "City"),
            Column("layout", "Layout", PROSE),
            Column("seats", "Seats"),
            Column("ga", "GA"),
            Column("sections", "Sections", PROSE),
            Column("areas", "GA areas", PROSE),
            Column("tiers", "Tiers (--price)", PROSE),
        ],
        as_json=False,
        title="Venues",
        empty="No venue has a layout yet: import one with `boxoffice catalog import FILE`.",
    )


@events_app.command("list")
def events_list(
    ctx: typer.Context,
    include_ended: Annotated[bool, typer.Option("--all", help="Also events that are over.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Every event (drafts and cancelled ones too), soonest first."""
    from booking.catalog import admin

    async def work(session: AsyncSession) -> list[admin.EventRow]:
        return await admin.list_events(session, include_ended=include_ended)

    show(
        with_session(settings_of(ctx), work),
        [
            Column("slug", "Event", ID),
            Column("title", "Title", PROSE),
            Column("venue_name", "Venue", PROSE),
            Column("starts", "Starts"),
            Column("phase", "Phase"),
            Column("sold", "Sold"),
            Column("paid_orders", "Orders"),
        ],
        as_json=as_json,
        title="Events",
        empty="No events yet: `boxoffice events create --help`.",
        display=lambda row: {
            "slug": row.slug,
            "title": row.title,
            "venue_name": row.venue_name,
            "starts": when(row.starts_at),
            "phase": row.phase.replace("_", " "),
            "sold": f"{row.sold}/{row.places}",
            "paid_orders": row.paid_orders,
        },
    )


@events_app.command("show")
def events_show(ctx: typer.Context, event: EventArgument, as_json: JsonOption = False) -> None:
    """An event in full: its times, phase, limits, and each tier with what it covers and has left."""
    from booking.ops import reads

    settings = settings_of(ctx)

    async def resolve(session: AsyncSession) -> uuid.UUID:
        return await reads.resolve_event(session, event)

    _show(settings, with_session(settings, resolve, f"event {event}"), as_json)


# --- creating and changing ----------------------------------------------------------------


@events_app.command("create")
def events_create(
    ctx: typer.Context,
    venue: Annotated[str, typer.Option(help="Venue slug or id (`boxoffice events venues`).")],
    title: Annotated[str, typer.Option(help="What fans see first.")],
    performer: Annotated[str, typer.Option(help="Who performs.")],
    category: Annotated[
        str, typer.Option(help="music, comedy, theatre, sports, family, classical, festival, talk.")
    ],
    starts: Annotated[str, typer.Option(help=f"When it starts: {WhenHelp}")],
    onsale: Annotated[str, typer.Option(help=f"When the sale opens: {WhenHelp}")],
    layout: Annotated[str | None, typer.Option(help="Layout name [default: the venue's only one].")] = None,
    ends: Annotated[
        str | None, typer.Option(help="When it ends [default: three hours after it starts].")
    ] = None,
    offsale: Annotated[str | None, typer.Option(help="When the sale closes [default: at the start].")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone [default: the venue's].")] = None,
    description: Annotated[str, typer.Option(help="A sentence or two for the event page.")] = "",
    slug: Annotated[
        str | None, typer.Option(help="Its address [default: from title, city and date].")
    ] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code of the prices, e.g. GBP.")] = None,
    tier: TierOption = None,
    tiers_file: TiersFileOption = None,
    price: PriceOption = None,
    max_per_fan: Annotated[
        int | None, typer.Option(min=1, max=100, help="Tickets per fan [default: as configured].")
    ] = None,
    hold_seconds: Annotated[
        int | None, typer.Option(min=300, max=600, help="How long holds last [default: as configured].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a draft event on a venue's layout with its tiers and every ticket. Put it on
    sale with `boxoffice events on-sale`."""
    from booking.catalog import admin
    from booking.catalog.models import Category

    settings = settings_of(ctx)
    try:
        chosen = Category(category.lower())
    except ValueError:
        raise typer.BadParameter(
            f"{category!r} is not one of {', '.join(c.value for c in Category)}"
        ) from None
    new = admin.NewEvent(
        title=title,
        performer=performer,
        category=chosen,
        venue=venue,
        layout=layout,
        starts_at=_moment(starts, "--starts"),  # type: ignore[arg-type]
        ends_at=_moment(ends, "--ends"),
        onsale_starts_at=_moment(onsale, "--onsale"),  # type: ignore[arg-type]
        onsale_ends_at=_moment(offsale, "--offsale"),
        timezone=timezone,
        description=description,
        slug=slug,
        currency=currency,
        tiers=_tiers(tier, tiers_file, currency),
        max_tickets_per_fan=max_per_fan,
        hold_ttl_seconds=hold_seconds,
        layout_prices=_layout_prices(price, currency),
    )

    async def work(session: AsyncSession) -> admin.EventAdminView:
        async def step() -> admin.EventAdminView:
            event_id = await admin.create_event(session, new, limits=_limits(settings))
            return await admin.get_event(session, event_id)

        return await audited(
            session,
            step,
            action="event.create",
            target_type="event",
            target_id=slug,
            details=lambda view: {"target_id": str(view.id), "slug": view.slug, "places": view.places},
        )

    view = with_session(settings, work)
    report(
        as_json,
        view,
        *_event_lines(view),
        f"created {view.slug}: put it on sale with `boxoffice events on-sale {view.slug}`",
    )


@events_app.command("change")
def events_change(
    ctx: typer.Context,
    event: EventArgument,
    title: Annotated[str | None, typer.Option()] = None,
    performer: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    category: Annotated[str | None, typer.Option()] = None,
    starts: Annotated[str | None, typer.Option(help=WhenHelp)] = None,
    ends: Annotated[str | None, typer.Option(help=WhenHelp)] = None,
    onsale: Annotated[str | None, typer.Option(help=WhenHelp)] = None,
    offsale: Annotated[str | None, typer.Option(help=WhenHelp)] = None,
    timezone: Annotated[str | None, typer.Option()] = None,
    max_per_fan: Annotated[str | None, typer.Option(metavar="N|default")] = None,
    hold_seconds: Annotated[str | None, typer.Option(metavar="SECONDS|default")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change an event's details, times or limits; only the options given change."""
    from booking.catalog import admin
    from booking.catalog.models import Category

    settings = settings_of(ctx)
    given: dict[str, Any] = {
        "title": title,
        "performer": performer,
        "description": description,
        "timezone": timezone,
        "starts_at": _moment(starts, "--starts"),
        "ends_at": _moment(ends, "--ends"),
        "onsale_starts_at": _moment(onsale, "--onsale"),
        "onsale_ends_at": _moment(offsale, "--offsale"),
    }
    if category is not None:
        try:
            given["category"] = Category(category.lower())
        except ValueError:
            raise typer.BadParameter(f"{category!r} is not a category", param_hint="--category") from None
    changes = {k: v for k, v in given.items() if v is not None}
    for name, option, text in (
        ("max_tickets_per_fan", "--max-per-fan", max_per_fan),
        ("hold_ttl_seconds", "--hold-seconds", hold_seconds),
    ):
        value = _override(text, option)
        if value != "unset":
            changes[name] = value
    if not changes:
        fail("give at least one option to change (see --help)", code=USAGE)

    async def act(session: AsyncSession, event_id: uuid.UUID) -> list[str]:
        return await admin.change_event(
            session, event_id, admin.EventChanges(**changes), limits=_limits(settings)
        )

    event_id, fields = _change(settings, event, "event.change", act, lambda done: {"fields": done})
    if as_json:
        _show(settings, event_id, True)
    else:
        say(f"changed {', '.join(fields)} of {event}")


@events_app.command("prices")
def events_prices(
    ctx: typer.Context,
    event: EventArgument,
    prices: Annotated[
        list[str], typer.Argument(metavar="TIER=PRICE...", help="Each tier's name (or id) and new price.")
    ],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Change tiers' prices. New holds pay them; holds and orders already made keep theirs."""
    from booking.catalog import admin
    from booking.ops import reads

    settings = settings_of(ctx)

    async def currency_of(session: AsyncSession) -> str:
        view = await admin.get_event(session, await reads.resolve_event(session, event))
        if view.currency is None:
            fail(f"event {event} has no tiers yet: `boxoffice events tiers` sets them", code=USAGE)
        return view.currency

    currency = with_session(settings, currency_of, f"event {event}")
    wanted: dict[str, int] = {}
    for text in prices:
        name, eq, price = text.rpartition("=")
        if not eq or not name:
            raise typer.BadParameter(f"{text!r} is not TIER=PRICE", param_hint="TIER=PRICE")
        wanted[name] = _minor(price, currency, "TIER=PRICE")
    confirm(f"Change {count(len(wanted), 'price')} of {event}? Fans see the new prices at once", yes)

    async def act(session: AsyncSession, event_id: uuid.UUID) -> int:
        return await admin.change_prices(session, event_id, wanted)

    event_id, changed = _change(settings, event, "event.prices", act, lambda _: {"prices": wanted})
    if as_json:
        _show(settings, event_id, True)
    else:
        say(f"{count(changed, 'price')} of {event} changed")


@events_app.command("tiers")
def events_tiers(
    ctx: typer.Context,
    event: EventArgument,
    tier: TierOption = None,
    tiers_file: TiersFileOption = None,
    price: PriceOption = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code [default: the event's].")] = None,
    as_json: JsonOption = False,
) -> None:
    """Replace an event's tiers (and so its tickets); only until anything of it was held."""
    from booking.catalog import admin
    from booking.ops import reads

    settings = settings_of(ctx)
    if not tier and tiers_file is None and not price:
        fail("give the tiers: --tier options, a --tiers file, or --price for the layout's tiers", code=USAGE)
    if currency is None and (tier or price):

        async def currency_of(session: AsyncSession) -> str | None:
            return (await admin.get_event(session, await reads.resolve_event(session, event))).currency

        currency = with_session(settings, currency_of, f"event {event}")
    specs = _tiers(tier, tiers_file, currency)
    prices = _layout_prices(price, currency)

    async def act(session: AsyncSession, event_id: uuid.UUID) -> int:
        return await admin.set_tiers(session, event_id, specs, currency=currency, layout_prices=prices)

    named = [t.name for t in specs] or sorted(prices or {})
    event_id, units = _change(
        settings, event, "event.tiers", act, lambda units: {"tiers": named, "places": units}
    )
    if as_json:
        _show(settings, event_id, True)
    else:
        say(f"{event}: tiers {', '.join(named)}; {units} places")


# --- the lifecycle ------------------------------------------------------------------------


def _moved_line(event: str, moved: admin.Moved) -> str:
    return f"{moved.title} ({event}): {moved.previous} → {moved.status}, now {moved.phase.replace('_', ' ')}"


@events_app.command("on-sale")
def events_on_sale(
    ctx: typer.Context,
    event: EventArgument,
    now: Annotated[
        bool, typer.Option("--now", help="Open the sale now rather than at its on-sale time.")
    ] = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Put a draft (or an event taken off sale) on sale: it sells from its on-sale time."""
    from booking.catalog import admin

    confirm(f"Put {event} on sale{' now' if now else ''}? Fans can find it and buy from it", yes)

    async def act(session: AsyncSession, event_id: uuid.UUID) -> admin.Moved:
        return await admin.put_on_sale(session, event_id, open_now=now)

    _, moved = _change(
        settings_of(ctx), event, "event.on_sale", act, lambda m: {"previous": m.previous, "phase": m.phase}
    )
    report(as_json, moved, _moved_line(event, moved))


@events_app.command("off-sale")
def events_off_sale(
    ctx: typer.Context, event: EventArgument, yes: YesOption = False, as_json: JsonOption = False
) -> None:
    """Take an event off sale: no new holds until it is put on sale again (holds made may
    still be paid). For a short stop, on-call's `boxoffice sale pause` is the tool."""
    from booking.catalog import admin

    confirm(f"Take {event} off sale? No fan can hold tickets until it is put on sale again", yes)

    async def act(session: AsyncSession, event_id: uuid.UUID) -> admin.Moved:
        return await admin.take_off_sale(session, event_id)

    _, moved = _change(
        settings_of(ctx), event, "event.off_sale", act, lambda m: {"previous": m.previous, "phase": m.phase}
    )
    report(as_json, moved, _moved_line(event, moved))


@events_app.command("cancel")
def events_cancel(
    ctx: typer.Context, event: EventArgument, yes: YesOption = False, as_json: JsonOption = False
) -> None:
    """Cancel an event for good: holds released, every paid order refunded in full through its
    payment provider and its fan emailed (by the worker, within moments)."""
    from booking.catalog import admin
    from booking.ops import reads

    settings = settings_of(ctx)

    async def preview(session: AsyncSession) -> admin.EventAdminView:
        return await admin.get_event(session, await reads.resolve_event(session, event))

    view = with_session(settings, preview, f"event {event}")
    in_flight = (
        f", and {count(view.payments_in_flight, 'payment')} still in flight refunded if it succeeds"
        if view.payments_in_flight
        else ""
    )
    confirm(
        f"Cancel {view.title} ({view.slug})? {count(view.paid_orders, 'paid order')} will be refunded in full"
        f" and their fans emailed{in_flight}. This cannot be undone",
        yes,
    )

    async def act(session: AsyncSession, event_id: uuid.UUID) -> admin.Cancelled:
        return await admin.cancel_event(session, event_id)

    _, done = _change(
        settings,
        event,
        "event.cancel",
        act,
        lambda d: {"orders_to_refund": d.orders_to_refund, "holds_released": d.holds_released},
    )
    report(
        as_json,
        done,
        f"{done.title} ({event}): cancelled; {count(done.orders_to_refund, 'order')} being refunded,"
        f" {count(done.holds_released, 'hold')} released",
    )
