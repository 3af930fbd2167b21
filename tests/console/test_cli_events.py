"""`boxoffice events`: from the demo's theatre to an event on sale and cancelled with the CLI
alone; output for people and `--json`; exit codes; confirmations that say what they do
(refusing without `--yes` when there is no terminal); one audit row per change."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.catalog.demo import load_demo
from booking.holds import service as holds
from booking.holds.service import Owner, SeatSelection
from booking.orders.service import confirm_hold
from console.cli_common import NOTHING, USAGE
from tests.console.test_cli_ops import POLICY, audit_log, boxoffice, db, env, items, one_line_error, scalar
from tests.factories import make_fan

__all__ = ["env"]  # the fixture, shared with the on-call commands' tests

THEATRE = "riverside-theatre"
TIERS = ("--tier", "Stalls=45.00@Stalls", "--tier", "Circle=35.50@Dress Circle")


def _demo(url: str) -> None:
    async def load(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            await load_demo(session)

    db(url, load)


def _create(*extra: str) -> Any:
    return boxoffice(
        "events",
        "create",
        "--venue",
        THEATRE,
        "--title",
        "Waiting for Godot",
        "--performer",
        "Riverside Repertory",
        "--category",
        "theatre",
        "--starts",
        "2031-09-12T19:30",
        "--onsale",
        "2026-01-05T10:00:00+00:00",
        "--currency",
        "EUR",
        *TIERS,
        *extra,
    )


def _buy(url: str, slug: str) -> uuid.UUID:
    async def buy(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
        async with sessions() as session:
            event_id = await scalar_in(session, "SELECT id FROM events WHERE slug = :s", s=slug)
            seat = await scalar_in(
                session,
                "SELECT seat_id FROM inventory_units WHERE event_id = :e AND state = 'available'"
                " ORDER BY seat_id LIMIT 1",
                e=event_id,
            )
            view = await holds.create_hold(
                session,
                owner=Owner(fan_id=await make_fan(session)),
                event_id=event_id,
                selection=SeatSelection((seat,)),
                policy=POLICY,
            )
            confirmation = await confirm_hold(session, hold_id=view.id)
            await session.commit()
            assert confirmation.order_id is not None
            return confirmation.order_id

    return db(url, buy)


async def scalar_in(session: AsyncSession, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    return await session.scalar(text(sql), params)


def test_from_the_demos_theatre_to_an_event_on_sale_and_cancelled(env: str, tmp_path: Path) -> None:
    _demo(env)
    venues = boxoffice("events", "venues")
    assert venues.exit_code == 0, venues.output
    assert THEATRE in venues.stdout
    assert "Dress Circle" in venues.stdout

    created = _create("--max-per-fan", "4")
    assert created.exit_code == 0, created.output
    slug = "waiting-for-godot-dublin-2031-09-12"
    assert f"created {slug}" in created.stdout
    assert "tier Stalls: 45.00 EUR, 360 places" in created.stdout
    assert "tier Circle: 35.50 EUR, 192 places" in created.stdout
    assert "starts 2031-09-12 18:30:00 UTC" in created.stdout  # 19:30 in Dublin, summer time

    shown = boxoffice("events", "show", slug, "--json")
    view = json.loads(shown.stdout)
    assert (view["status"], view["phase"], view["places"], view["max_tickets_per_fan"]) == (
        "draft",
        "draft",
        552,
        4,
    )

    repriced = boxoffice("events", "prices", slug, "Circle=30", "--yes")
    assert repriced.exit_code == 0, repriced.output
    assert "1 price of" in repriced.stdout
    changed = boxoffice(
        "events", "change", slug, "--description", "Two tramps wait.", "--max-per-fan", "default"
    )
    assert changed.exit_code == 0, changed.output

    refused = boxoffice("events", "on-sale", slug)
    one_line_error(refused, USAGE, "refusing without --yes")
    opened = boxoffice("events", "on-sale", slug, "--yes", "--json")
    assert opened.exit_code == 0, opened.output
    assert json.loads(opened.stdout)["phase"] == "on_sale"
    listed = boxoffice("events", "list", "--json")
    assert slug in [row["slug"] for row in items(listed)]

    _buy(env, slug)
    _buy(env, slug)
    ask = boxoffice("events", "cancel", slug)
    one_line_error(ask, USAGE, "2 paid orders will be refunded in full and their fans emailed")
    assert scalar(env, "SELECT status FROM events WHERE slug = :s", s=slug) == "on_sale"
    cancelled = boxoffice("events", "cancel", slug, "--yes")
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled; 2 orders being refunded" in cancelled.stdout
    assert scalar(env, "SELECT status FROM events WHERE slug = :s", s=slug) == "cancelled"

    # The refusals for want of --yes changed nothing and are no action: five rows.
    entries = list(reversed(audit_log(env, limit=6)))
    assert [(e.action, e.outcome, e.actor_type) for e in entries] == [
        ("event.create", "ok", "cli"),
        ("event.prices", "ok", "cli"),
        ("event.change", "ok", "cli"),
        ("event.on_sale", "ok", "cli"),
        ("event.cancel", "ok", "cli"),
    ]
    event_id = scalar(env, "SELECT id FROM events WHERE slug = :s", s=slug)
    assert all(e.target_id == str(event_id) for e in entries)
    assert entries[-1].details["orders_to_refund"] == 2


def test_bad_tiers_and_bad_usage_are_one_line_and_change_nothing(env: str) -> None:
    _demo(env)
    bad_syntax = boxoffice("events", "create", "--venue", THEATRE, "--title", "X", "--performer", "Y",
                           "--category", "theatre", "--starts", "2031-09-12T19:30", "--onsale", "2031-01-01T10:00",
                           "--currency", "EUR", "--tier", "Stalls 45")  # fmt: skip
    assert bad_syntax.exit_code == USAGE
    assert "NAME=PRICE@WHAT" in bad_syntax.output
    no_currency = boxoffice("events", "create", "--venue", THEATRE, "--title", "X", "--performer", "Y",
                            "--category", "theatre", "--starts", "2031-09-12T19:30", "--onsale",
                            "2031-01-01T10:00", "--tier", "Stalls=45@Stalls")  # fmt: skip
    one_line_error(no_currency, USAGE, "--currency is needed")

    gap = boxoffice("events", "create", "--venue", THEATRE, "--title", "X", "--performer", "Y",
                    "--category", "theatre", "--starts", "2031-09-12T19:30", "--onsale", "2031-01-01T10:00",
                    "--currency", "EUR", "--tier", "Stalls=45@Stalls")  # fmt: skip
    one_line_error(gap, 1, "192 seats of section 'Dress Circle' are priced by no tier")
    assert scalar(env, "SELECT count(*) FROM events WHERE title = 'X'") == 0
    (entry,) = audit_log(env)
    assert (entry.action, entry.outcome, entry.details["problem"]) == (
        "event.create",
        "failed",
        "tiers-invalid",
    )

    unknown = boxoffice("events", "show", "no-such-event")
    one_line_error(unknown, 1, "no-such-event")
    nothing_given = boxoffice("events", "change", "hamlet-dublin")
    one_line_error(nothing_given, USAGE, "at least one option")
    assert NOTHING == 3


def test_tiers_from_a_file_replace_a_drafts_tiers(env: str, tmp_path: Path) -> None:
    _demo(env)
    assert _create().exit_code == 0
    slug = "waiting-for-godot-dublin-2031-09-12"
    tiers = tmp_path / "tiers.json"
    tiers.write_text(
        json.dumps(
            [
                {"name": "Front stalls", "price_minor": 6000, "rows": [{"section": "Stalls", "row": "A"}]},
                {
                    "name": "Everything else",
                    "price_minor": 3000,
                    "sections": ["Dress Circle"],
                    "rows": [{"section": "Stalls", "row": r} for r in "BCDEFGHIJKLMNO"],
                },
            ]
        )
    )
    replaced = boxoffice("events", "tiers", slug, "--tiers", str(tiers), "--json")
    assert replaced.exit_code == 0, replaced.output
    view = json.loads(replaced.stdout)
    assert [(t["name"], t["places"]) for t in view["tiers"]] == [
        ("Front stalls", 24),
        ("Everything else", 528),
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"name": "A", "price_minor": -1}]')
    refused = boxoffice("events", "tiers", slug, "--tiers", str(broken))
    assert refused.exit_code == USAGE
    assert "price_minor" in refused.output


def test_the_demos_20000_place_arena_goes_on_sale_priced_by_its_own_tiers(env: str) -> None:
    _demo(env)
    venues = boxoffice("events", "venues", "--json")
    (arena,) = [v for v in items(venues) if v["slug"] == "meridian-arena"]
    (layout,) = arena["layouts"]
    assert layout["seats"] + layout["ga_places"] == 20_000
    prices = [("Front Standing", "75"), ("Standing", "55"), ("Lower Tier", "65"), ("Upper Tier", "45")]
    args = [arg for name, price in prices for arg in ("--price", f"{name}={price}")]
    missing = boxoffice("events", "create", "--venue", "meridian-arena", "--title", "Arena Night",
                        "--performer", "Big Band", "--category", "music", "--starts", "2031-10-10T20:00",
                        "--onsale", "2026-01-01T10:00", "--currency", "GBP", *args)  # fmt: skip
    one_line_error(missing, 1, "give a price for the layout's tier 'Side View'")
    created = boxoffice("events", "create", "--venue", "meridian-arena", "--title", "Arena Night",
                        "--performer", "Big Band", "--category", "music", "--starts", "2031-10-10T20:00",
                        "--onsale", "2026-01-01T10:00", "--currency", "GBP", *args,
                        "--price", "Side View=35", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    view = json.loads(created.stdout)
    assert view["places"] == 20_000
    assert {t["name"] for t in view["tiers"]} == {
        "Front Standing",
        "Standing",
        "Lower Tier",
        "Upper Tier",
        "Side View",
    }
    opened = boxoffice("events", "on-sale", view["slug"], "--yes", "--json")
    assert opened.exit_code == 0, opened.output
    assert json.loads(opened.stdout)["phase"] == "on_sale"
    assert scalar(env, "SELECT count(*) FROM inventory_units WHERE event_id = :e", e=view["id"]) == 20_000
