"""Administering events against real PostgreSQL: creation on a 20,000-place layout, tiers that
must price every place exactly once, the lifecycle and its refusals, prices that never
change what is already held or sold, and an event's own fan cap and hold lifetime."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.catalog import admin, service
from booking.catalog.admin import EventChanges
from booking.catalog.lifecycle import EVENT_MOVES, Phase
from booking.catalog.models import Event, EventStatus
from booking.catalog.pricing import RowRef, TierSpec
from booking.catalog.search import EVENT_CHANGED, EventFilters
from booking.db import make_sessionmaker
from booking.errors import (
    EventNotReady,
    EventSlugTaken,
    EventStateConflict,
    InvalidRequest,
    LayoutNotFound,
    PriceTierNotFound,
    SaleNotOpen,
    SaleStateConflict,
    TicketCapReached,
    TiersInvalid,
    TiersLocked,
    VenueNotFound,
)
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from booking.inventory.models import InventoryUnit
from booking.inventory.seatmap import version_key
from booking.ops import service as ops
from booking.outbox import OutboxMessage, Topic
from booking.payments import offline
from booking.payments.offline import OfflineGateway
from booking.settings import get_settings
from jobs.outbox import relay_outbox
from tests.catalog_data import Arena, arena_tiers, make_arena, new_event
from tests.factories import advance_clock, make_fan, pay_with_card

POLICY = HoldPolicy()


@pytest.fixture
async def arena(session: AsyncSession) -> Arena:
    return await make_arena(session)


@pytest.fixture
async def hall(session: AsyncSession) -> Arena:
    """Two blocks of two rows of five seats, and 20 standing: 40 places."""
    return await make_arena(session, sections=2, rows=2, seats_per_row=5, standing=20)


@pytest.fixture
def job_env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield redis_url
    get_settings.cache_clear()


async def _create(session: AsyncSession, arena: Arena, **changes: Any) -> uuid.UUID:
    event_id = await admin.create_event(session, new_event(arena, **changes), limits=POLICY)
    await session.commit()
    return event_id


async def _on_sale(session: AsyncSession, arena: Arena, **changes: Any) -> uuid.UUID:
    event_id = await _create(session, arena, **changes)
    await admin.put_on_sale(session, event_id)
    await session.commit()
    return event_id


async def _count(session: AsyncSession, sql: str, **params: Any) -> int:
    return int(await session.scalar(text(sql), params) or 0)


async def _topics(session: AsyncSession, event_id: uuid.UUID) -> list[str]:
    return list(
        (
            await session.scalars(
                select(OutboxMessage.topic)
                .where(OutboxMessage.catalog_event_id == event_id)
                .order_by(OutboxMessage.id)
            )
        ).all()
    )


async def _run_queued(redis_url: str, *names: str) -> list[Any]:
    """Run the jobs the relay queued whose function is one of ``names``, in this process, as
    the worker would (each job function takes only the arguments it was queued with)."""
    import importlib

    redis = Redis.from_url(redis_url)
    try:
        jobs = [job for job in Queue("default", connection=redis).jobs if job.func_name in names]
    finally:
        redis.close()
    results = []
    for job in jobs:
        module, _, name = str(job.func_name).rpartition(".")
        results.append(await getattr(importlib.import_module(module), name)(*job.args, **job.kwargs))
    return results


# --- creation -----------------------------------------------------------------------------


@pytest.mark.usefixtures("job_env")
async def test_an_event_on_a_20000_place_layout_has_every_place_once_and_search_finds_it_once_refreshed(
    session: AsyncSession, arena: Arena, redis_url: str
) -> None:
    assert arena.places == 20_000
    event_id = await _on_sale(session, arena, title="Borealis Live")

    # Every seat exactly once, every standing place once, nothing else.
    assert (
        await _count(session, "SELECT count(*) FROM inventory_units WHERE event_id = :e", e=event_id)
        == 20_000
    )
    assert (
        await _count(
            session,
            "SELECT count(DISTINCT u.seat_id) FROM inventory_units u JOIN seats s ON s.id = u.seat_id"
            " JOIN seat_rows r ON r.id = s.row_id JOIN sections c ON c.id = r.section_id"
            " WHERE u.event_id = :e AND c.layout_id = :l",
            e=event_id,
            l=arena.layout_id,
        )
        == arena.seats
    )
    assert (
        await _count(
            session,
            "SELECT count(*) FROM inventory_units WHERE event_id = :e AND ga_area_id IS NOT NULL",
            e=event_id,
        )
        == arena.standing
    )
    # The tiers cover it all: per tier, exactly the seats of its blocks.
    per_tier = {
        name: count
        for name, count in await session.execute(
            text(
                "SELECT t.name, count(u.id) FROM price_tiers t JOIN inventory_units u ON u.price_tier_id = t.id"
                " WHERE t.event_id = :e GROUP BY t.name"
            ),
            {"e": event_id},
        )
    }
    per_block = arena.rows * arena.seats_per_row
    assert per_tier == {"Premium": 4 * per_block, "Standard": 12 * per_block, "Standing": 2000}
    view = await admin.get_event(session, event_id)
    assert (view.places, view.phase, view.currency) == (20_000, Phase.ON_SALE, "GBP")
    assert [c.name for c in view.tiers[0].covers] == ["Block 1", "Block 2", "Block 3", "Block 4"]

    # Search finds it once the relay's refresh job has rewritten its document, not before.
    async def found() -> list[uuid.UUID]:
        page = await service.list_events(session, EventFilters.parse(q="borealis"), limit=10)
        await session.rollback()
        return [item.id for item in page.items]

    assert await found() == []
    assert EVENT_CHANGED in await _topics(session, event_id)
    await relay_outbox()
    assert await _run_queued(redis_url, "jobs.search.refresh_event_search") == [1, 1]
    assert await found() == [event_id]


async def test_an_event_can_be_created_without_tiers_and_priced_later(
    session: AsyncSession, hall: Arena
) -> None:
    event_id = await _create(session, hall, tiers=(), currency=None)
    assert await _count(session, "SELECT count(*) FROM inventory_units WHERE event_id = :e", e=event_id) == 0
    with pytest.raises(EventNotReady) as caught:
        await admin.put_on_sale(session, event_id)
    assert caught.value.problems == ["it has no price tiers: set them first"]
    await session.rollback()
    with pytest.raises(InvalidRequest, match="currency"):
        await admin.set_tiers(session, event_id, arena_tiers(hall))
    await session.rollback()
    assert await admin.set_tiers(session, event_id, arena_tiers(hall), currency="EUR") == 40
    await session.commit()
    moved = await admin.put_on_sale(session, event_id)
    assert (moved.previous, moved.status, moved.phase) == ("draft", "on_sale", "on_sale")


async def test_slugs_are_made_from_the_title_city_and_date_and_never_clash(
    session: AsyncSession, hall: Arena
) -> None:
    starts = dt.datetime(2031, 5, 17, 19, 30)
    first = await _create(
        session, hall, title="Café Tacvba!", starts_at=starts, onsale_starts_at=starts - dt.timedelta(days=30)
    )
    second = await _create(
        session, hall, title="Café Tacvba!", starts_at=starts, onsale_starts_at=starts - dt.timedelta(days=30)
    )
    slugs = [await session.scalar(select(Event.slug).where(Event.id == e)) for e in (first, second)]
    assert slugs == ["cafe-tacvba-leeds-2031-05-17", "cafe-tacvba-leeds-2031-05-17-2"]
    with pytest.raises(EventSlugTaken):
        await admin.create_event(session, new_event(hall, slug=slugs[0]), limits=POLICY)


async def test_times_without_an_offset_are_the_venues_wall_clock(session: AsyncSession, hall: Arena) -> None:
    # 19:30 in London in July is 18:30 UTC (summer time).
    event_id = await _create(
        session,
        hall,
        starts_at=dt.datetime(2031, 7, 1, 19, 30),
        onsale_starts_at=dt.datetime(2031, 6, 1, 9, 0),
    )
    event = await session.get(Event, event_id)
    assert event is not None
    assert event.starts_at == dt.datetime(2031, 7, 1, 18, 30, tzinfo=dt.UTC)
    assert event.ends_at == dt.datetime(2031, 7, 1, 21, 30, tzinfo=dt.UTC)
    assert event.onsale_ends_at == event.starts_at
    assert event.timezone == "Europe/London"


@pytest.mark.parametrize(
    ("changes", "error", "fragment"),
    [
        ({"title": "  "}, InvalidRequest, "title cannot be empty"),
        ({"timezone": "Mars/Olympus"}, InvalidRequest, "not a known time zone"),
        ({"ends_at": dt.datetime(2000, 1, 1, tzinfo=dt.UTC)}, InvalidRequest, "ends_at must be after"),
        ({"currency": "gbp"}, InvalidRequest, "ISO 4217"),
        ({"slug": "Not A Slug"}, InvalidRequest, "slug is lower-case"),
        ({"max_tickets_per_fan": 9}, InvalidRequest, "may lower the configured cap"),
        ({"hold_ttl_seconds": 60}, InvalidRequest, "300 to 600"),
        ({"venue": "nowhere"}, VenueNotFound, "nowhere"),
        ({"layout": "In the round"}, LayoutNotFound, "'End stage'"),
    ],
)
async def test_a_bad_event_is_refused_with_a_clear_error_and_nothing_is_created(
    session: AsyncSession, hall: Arena, changes: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        await admin.create_event(session, new_event(hall, **changes), limits=POLICY)
    await session.rollback()
    assert await _count(session, "SELECT count(*) FROM events") == 0


# --- tiers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "fragments"),
    [
        (
            (TierSpec("Low", 1000, sections=("Block 1",)), TierSpec("Floor", 500, ga_area="Standing Floor")),
            ["10 seats of section 'Block 2' are priced by no tier (rows A, B)"],
        ),
        (
            (
                TierSpec("All", 1000, sections=("Block 1", "Block 2")),
                TierSpec("Front", 2000, rows=(RowRef("Block 2", "A"),)),
                TierSpec("Floor", 500, ga_area="Standing Floor"),
            ),
            [
                "5 seats of section 'Block 2' are priced by more than one tier, 'All' and 'Front' (row A: seats 1, 2, 3, 4, 5)"
            ],
        ),
        (
            (
                TierSpec("All", 1000, sections=("Block 1", "Block 9")),
                TierSpec("Floor", 500, ga_area="Standing Floor"),
            ),
            ["tier 'All': layout 'End stage' has no section 'Block 9' (its sections: 'Block 1', 'Block 2')"],
        ),
        (
            (
                TierSpec("All", 1000, sections=("Block 1", "Block 2")),
                TierSpec("Early", 400, ga_area="Standing Floor", quantity=5),
                TierSpec("Late", 500, ga_area="Standing Floor", quantity=10),
            ),
            ["GA area 'Standing Floor' has 20 places and its tiers sell 15"],
        ),
        (
            (
                TierSpec("All", 1000, sections=("Block 1", "Block 2"), seat_ids=(999_999_999,)),
                TierSpec("Floor", 500, ga_area="Standing Floor"),
            ),
            ["seats 999999999 are not seats of layout 'End stage'"],
        ),
        (
            (
                TierSpec("All", 1000, sections=("Block 1", "Block 2"), ga_area="Standing Floor"),
                TierSpec("All", 1000),
            ),
            [
                "tier 'All' sells both seats and GA area 'Standing Floor': make them two tiers",
                "tier 'All' is named twice",
                "tier 'All' sells nothing",
            ],
        ),
    ],
)
async def test_tiers_must_price_every_place_exactly_once(
    session: AsyncSession, hall: Arena, tiers: tuple[TierSpec, ...], fragments: list[str]
) -> None:
    with pytest.raises(TiersInvalid) as caught:
        await admin.create_event(session, new_event(hall, tiers=tiers), limits=POLICY)
    for fragment in fragments:
        assert any(fragment in problem for problem in caught.value.problems), caught.value.problems
    await session.rollback()
    assert await _count(session, "SELECT count(*) FROM events") == 0
    assert await _count(session, "SELECT count(*) FROM inventory_units") == 0


async def test_rows_and_single_seats_and_shared_areas_cover_a_layout_too(
    session: AsyncSession, hall: Arena
) -> None:
    seat_ids = list(
        (
            await session.scalars(
                text(
                    "SELECT s.id FROM seats s JOIN seat_rows r ON r.id = s.row_id JOIN sections c"
                    " ON c.id = r.section_id WHERE c.name = 'Block 2' AND r.label = 'B' ORDER BY s.id"
                )
            )
        ).all()
    )
    tiers = (
        TierSpec("Front", 3000, rows=(RowRef("Block 2", "A"),), sections=("Block 1",)),
        TierSpec("Back", 2000, seat_ids=tuple(seat_ids)),
        TierSpec("Early", 400, ga_area="Standing Floor", quantity=5),
        TierSpec("Late", 500, ga_area="Standing Floor", quantity=15),
    )
    event_id = await _create(session, hall, tiers=tiers)
    view = await admin.get_event(session, event_id)
    assert [(t.name, t.places, t.kind) for t in view.tiers] == [
        ("Front", 15, "seated"),
        ("Back", 5, "seated"),
        ("Early", 5, "ga"),
        ("Late", 15, "ga"),
    ]


async def test_tiers_are_replaced_until_something_is_held_then_locked(
    session: AsyncSession, hall: Arena
) -> None:
    event_id = await _on_sale(session, hall)
    cheaper = (
        TierSpec("Everything", 1500, sections=("Block 1", "Block 2")),
        TierSpec("Floor", 900, ga_area="Standing Floor"),
    )
    assert await admin.set_tiers(session, event_id, cheaper) == 40
    await session.commit()
    view = await admin.get_event(session, event_id)
    assert [t.name for t in view.tiers] == ["Everything", "Floor"]
    fan = Owner(fan_id=await make_fan(session))
    await holds.create_hold(
        session, owner=fan, event_id=event_id, selection=GASelection(view.tiers[1].id, 1), policy=POLICY
    )
    await session.commit()
    with pytest.raises(TiersLocked):
        await admin.set_tiers(session, event_id, arena_tiers(hall))


async def test_put_on_sale_refuses_an_event_whose_layout_changed_since_its_tiers(
    session: AsyncSession, hall: Arena
) -> None:
    event_id = await _create(session, hall)
    await session.execute(
        text(
            "INSERT INTO seats (row_id, number, x, y) SELECT r.id, '6', 60, 0 FROM seat_rows r"
            " JOIN sections c ON c.id = r.section_id WHERE c.name = 'Block 1' AND r.label = 'A'"
            " AND c.layout_id = :l"
        ),
        {"l": hall.layout_id},
    )
    await session.commit()
    with pytest.raises(EventNotReady) as caught:
        await admin.put_on_sale(session, event_id)
    assert caught.value.problems == ["1 seats of its layout have no ticket: set the tiers again"]
    await session.rollback()
    assert await admin.set_tiers(session, event_id, arena_tiers(hall)) == 41
    await admin.put_on_sale(session, event_id)


# --- the lifecycle ------------------------------------------------------------------------


async def _phase(session: AsyncSession, event_id: uuid.UUID) -> tuple[str, str]:
    view = await admin.get_event(session, event_id)
    await session.rollback()
    return view.status, view.phase


async def test_the_lifecycle_moves_and_what_it_refuses(session: AsyncSession, hall: Arena) -> None:
    event_id = await _create(session, hall)
    assert await _phase(session, event_id) == ("draft", "draft")
    for refused in (admin.take_off_sale, admin.cancel_event):
        if refused is admin.cancel_event:
            continue  # a draft may be cancelled: tried last
        with pytest.raises(EventStateConflict, match="Cannot take off sale an event that is draft"):
            await refused(session, event_id)
        await session.rollback()
    with pytest.raises(SaleStateConflict):
        await ops.pause_sale(session, event_id)
    await session.rollback()

    moved = await admin.put_on_sale(session, event_id)
    await session.commit()
    assert (moved.previous, moved.status, moved.phase) == ("draft", "on_sale", "on_sale")
    with pytest.raises(EventStateConflict) as again:
        await admin.put_on_sale(session, event_id)
    assert again.value.extra == {"event_status": "on_sale", "phase": "on_sale"}
    await session.rollback()

    # On-call's pause and resume keep working on an administered event.
    await ops.pause_sale(session, event_id)
    await session.commit()
    assert await _phase(session, event_id) == ("paused", "paused")
    await ops.resume_sale(session, event_id)
    await session.commit()

    off = await admin.take_off_sale(session, event_id)
    await session.commit()
    assert (off.previous, off.status, off.phase) == ("on_sale", "off_sale", "off_sale")
    fan = Owner(fan_id=await make_fan(session))
    view = await admin.get_event(session, event_id)
    with pytest.raises(SaleNotOpen):
        await holds.create_hold(
            session, owner=fan, event_id=event_id, selection=GASelection(view.tiers[-1].id, 1), policy=POLICY
        )
    await session.rollback()
    back = await admin.put_on_sale(session, event_id)
    await session.commit()
    assert (back.previous, back.phase) == ("off_sale", "on_sale")

    cancelled = await admin.cancel_event(session, event_id)
    await session.commit()
    assert (cancelled.previous, cancelled.status) == ("on_sale", "cancelled")
    for verb in (admin.put_on_sale, admin.take_off_sale, admin.cancel_event):
        with pytest.raises(EventStateConflict, match="cancelled"):
            await verb(session, event_id)
        await session.rollback()
    with pytest.raises(EventStateConflict):
        await admin.change_event(session, event_id, EventChanges(title="Back on"), limits=POLICY)
    await session.rollback()
    with pytest.raises(EventStateConflict):
        await admin.change_prices(session, event_id, {"Premium": 1})


async def test_phases_follow_the_clock_and_the_inventory(session: AsyncSession) -> None:
    tiny = await make_arena(session, sections=1, rows=1, seats_per_row=2, standing=0)
    now = dt.datetime.now(dt.UTC)
    event_id = await _create(
        session,
        tiny,
        starts_at=now + dt.timedelta(days=3),
        onsale_starts_at=now + dt.timedelta(days=1),
        tiers=(TierSpec("All", 1000, sections=tiny.sections),),
    )
    await admin.put_on_sale(session, event_id)
    await session.commit()
    assert await _phase(session, event_id) == ("on_sale", "scheduled")

    await admin.change_event(
        session, event_id, EventChanges(onsale_starts_at=now - dt.timedelta(hours=1)), limits=POLICY
    )
    await session.commit()
    assert await _phase(session, event_id) == ("on_sale", "on_sale")

    seats = tuple(
        (await session.scalars(select(InventoryUnit.seat_id).where(InventoryUnit.event_id == event_id))).all()
    )
    fan = Owner(fan_id=await make_fan(session))
    hold = await holds.create_hold(
        session,
        owner=fan,
        event_id=event_id,
        selection=SeatSelection(tuple(seat for seat in seats if seat is not None)),
        policy=POLICY,
    )
    await session.commit()
    assert await _phase(session, event_id) == ("on_sale", "sold_out")
    # The hold runs out: sold out no more, with no job having run.
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    assert await _phase(session, event_id) == ("on_sale", "on_sale")
    assert hold.quantity == 2

    await admin.change_event(
        session,
        event_id,
        EventChanges(onsale_starts_at=now - dt.timedelta(days=2), onsale_ends_at=now - dt.timedelta(days=1)),
        limits=POLICY,
    )
    await session.commit()
    assert await _phase(session, event_id) == ("on_sale", "off_sale")
    await session.execute(
        text(
            "UPDATE events SET starts_at = now() - interval '4 days', ends_at = now() - interval '1 hour' WHERE id = :e"
        ),
        {"e": event_id},
    )
    await session.commit()
    assert await _phase(session, event_id) == ("on_sale", "ended")
    with pytest.raises(EventStateConflict, match="ended now"):
        await admin.cancel_event(session, event_id)


def test_on_calls_pause_and_resume_are_the_lifecycles_own_moves() -> None:
    expected = {
        move: (next(iter(EVENT_MOVES[move][0])), EVENT_MOVES[move][1]) for move in ("pause", "resume")
    }
    assert expected == ops.SALE_MOVES
    assert all(len(EVENT_MOVES[move][0]) == 1 for move in ("pause", "resume"))
    assert EVENT_MOVES["cancel"][1] == EventStatus.CANCELLED


# --- changes reach fans -------------------------------------------------------------------


async def test_every_fan_visible_change_reaches_search_and_the_seat_map_in_its_transaction(
    session: AsyncSession, hall: Arena, job_env: str
) -> None:
    event_id = await _on_sale(session, hall)
    await session.execute(text("DELETE FROM outbox"))
    await session.commit()

    changed = await admin.change_event(
        session, event_id, EventChanges(title="Aurora Lights: Encore", description="Again."), limits=POLICY
    )
    assert changed == ["description", "title"]
    await session.rollback()  # not committed: nothing of it is told
    assert await _topics(session, event_id) == []

    await admin.change_event(session, event_id, EventChanges(title="Aurora Lights: Encore"), limits=POLICY)
    await session.commit()
    await admin.change_prices(session, event_id, {"Standard": 4000})
    await session.commit()
    await admin.take_off_sale(session, event_id)
    await session.commit()
    assert await _topics(session, event_id) == [EVENT_CHANGED, Topic.SEATMAP_CHANGED] * 3

    # The relay drops the cached seat-map layout and moves the version; search is refreshed.
    redis = Redis.from_url(job_env)
    layout_key = f"boxoffice:event:{{{event_id}}}:seatmap:layout"
    redis.set(layout_key, b"stale")
    before = int(redis.get(version_key(event_id)) or 0)
    await relay_outbox()
    assert redis.get(layout_key) is None
    assert int(redis.get(version_key(event_id)) or 0) > before
    redis.close()
    assert await _run_queued(job_env, "jobs.search.refresh_event_search") == [1, 1, 1]
    document = await session.scalar(
        text("SELECT names FROM event_search WHERE event_id = :e"), {"e": event_id}
    )
    assert document is not None
    assert "encore" in document


async def test_a_rejected_change_changes_nothing(session: AsyncSession, hall: Arena) -> None:
    event_id = await _create(session, hall)
    before = await admin.get_event(session, event_id)
    await session.rollback()
    with pytest.raises(InvalidRequest, match="onsale_ends_at must be no later than ends_at"):
        await admin.change_event(
            session,
            event_id,
            EventChanges(onsale_ends_at=before.ends_at + dt.timedelta(hours=1)),
            limits=POLICY,
        )
    await session.rollback()
    with pytest.raises(InvalidRequest, match="at least one field"):
        await admin.change_event(session, event_id, EventChanges(), limits=POLICY)
    await session.rollback()
    with pytest.raises(PriceTierNotFound, match="'Premium', 'Standard', 'Standing'"):
        await admin.change_prices(session, event_id, {"VIP": 100})
    await session.rollback()
    assert await admin.get_event(session, event_id) == before


# --- prices never touch what is held or sold ----------------------------------------------


async def test_a_price_change_applies_to_new_holds_only(
    session: AsyncSession, engine: AsyncEngine, hall: Arena
) -> None:
    event_id = await _on_sale(session, hall)
    view = await admin.get_event(session, event_id)
    floor = next(t for t in view.tiers if t.name == "Standing")
    owner = Owner(fan_id=await make_fan(session))
    held = await holds.create_hold(
        session, owner=owner, event_id=event_id, selection=GASelection(floor.id, 2), policy=POLICY
    )
    paid = await holds.create_hold(
        session, owner=owner, event_id=event_id, selection=GASelection(floor.id, 1), policy=POLICY
    )
    await session.commit()
    sessions = make_sessionmaker(engine)
    settled = await pay_with_card(sessions, OfflineGateway(sessions), owner, paid.id, offline.SUCCESS)
    assert settled.order_id is not None

    assert (
        await admin.change_prices(session, event_id, {str(floor.id): 9999, "Premium": floor.price_minor}) == 2
    )
    await session.commit()

    # The live hold, its checkout and the order keep the prices they were made at.
    kept = await holds.get_hold(session, held.id)
    assert kept.total_minor == 2 * floor.price_minor
    assert {item.price_minor for item in kept.items} == {floor.price_minor}
    order_total = await session.scalar(
        text("SELECT total_minor FROM orders WHERE id = :o"), {"o": settled.order_id}
    )
    lines = await session.scalar(
        text("SELECT sum(price_minor) FROM order_items WHERE order_id = :o"), {"o": settled.order_id}
    )
    assert order_total == lines == floor.price_minor
    checkout = await pay_with_card(sessions, OfflineGateway(sessions), owner, held.id, offline.SUCCESS)
    charged = await session.scalar(
        text("SELECT amount_minor FROM payments WHERE id = :p"), {"p": checkout.payment_id}
    )
    assert charged == 2 * floor.price_minor
    # A new hold pays the new price.
    fresh = await holds.create_hold(
        session, owner=owner, event_id=event_id, selection=GASelection(floor.id, 1), policy=POLICY
    )
    assert fresh.total_minor == 9999


# --- an event's own cap and hold lifetime -------------------------------------------------


async def test_an_events_own_fan_cap_and_hold_lifetime_apply_to_its_holds(
    session: AsyncSession, hall: Arena
) -> None:
    event_id = await _on_sale(session, hall, max_tickets_per_fan=3, hold_ttl_seconds=300)
    view = await admin.get_event(session, event_id)
    floor = next(t for t in view.tiers if t.name == "Standing")
    fan = Owner(fan_id=await make_fan(session))
    hold = await holds.create_hold(
        session, owner=fan, event_id=event_id, selection=GASelection(floor.id, 2), policy=POLICY
    )
    await session.commit()
    assert hold.expires_at - hold.created_at == dt.timedelta(seconds=300)
    cap = await session.scalar(text("SELECT ticket_cap FROM holds WHERE id = :h"), {"h": hold.id})
    assert cap == 3
    with pytest.raises(TicketCapReached) as caught:
        await holds.create_hold(
            session, owner=fan, event_id=event_id, selection=GASelection(floor.id, 2), policy=POLICY
        )
    assert caught.value.extra == {"cap": 3, "already": 2}
    await session.rollback()
    renewed = await holds.renew_hold(session, owner=fan, hold_id=hold.id, policy=POLICY)
    assert renewed.expires_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=301)
    await session.commit()

    # Back to the configured ones.
    await admin.change_event(
        session, event_id, EventChanges(max_tickets_per_fan=None, hold_ttl_seconds=None), limits=POLICY
    )
    await session.commit()
    other = await holds.create_hold(
        session, owner=fan, event_id=event_id, selection=GASelection(floor.id, 2), policy=POLICY
    )
    assert other.expires_at - other.created_at == POLICY.ttl
    assert other.quantity == 2
    # The event's cap is a fan's: a till sells beyond it.
    till = await create_key(session, "till-9", StaffRole.BOX_OFFICE)
    sale = await holds.create_hold(
        session,
        owner=Owner(staff_key_id=till.id),
        event_id=event_id,
        selection=GASelection(floor.id, 5),
        policy=POLICY,
    )
    assert sale.quantity == 5


async def test_an_event_can_be_priced_by_the_tiers_its_layout_declares(
    session: AsyncSession, hall: Arena
) -> None:
    # As a layout file leaves them: row A of both blocks Front, the rest Back, the floor Floor.
    await session.execute(
        text('UPDATE seating_layouts SET tiers = \'["Front", "Back", "Floor"]\' WHERE id = :l'),
        {"l": hall.layout_id},
    )
    await session.execute(
        text(
            "UPDATE seat_rows SET tier = CASE label WHEN 'A' THEN 'Front' ELSE 'Back' END"
            " WHERE section_id IN (SELECT id FROM sections WHERE layout_id = :l)"
        ),
        {"l": hall.layout_id},
    )
    await session.execute(
        text("UPDATE ga_areas SET tier = 'Floor' WHERE layout_id = :l"), {"l": hall.layout_id}
    )
    await session.commit()
    with pytest.raises(TiersInvalid) as caught:
        await admin.create_event(
            session, new_event(hall, tiers=(), layout_prices={"Front": 5000, "VIP": 1}), limits=POLICY
        )
    assert caught.value.problems == [
        "the layout declares no tier 'VIP' (its tiers: 'Back', 'Floor', 'Front')",
        "give a price for the layout's tier 'Back'",
        "give a price for the layout's tier 'Floor'",
    ]
    await session.rollback()
    event_id = await _create(
        session, hall, tiers=(), layout_prices={"Front": 5000, "Back": 3000, "Floor": 2000}
    )
    view = await admin.get_event(session, event_id)
    assert [(t.name, t.price_minor, t.places, t.kind) for t in view.tiers] == [
        ("Front", 5000, 10, "seated"),
        ("Back", 3000, 10, "seated"),
        ("Floor", 2000, 20, "ga"),
    ]
    with pytest.raises(InvalidRequest, match="not both"):
        await admin.set_tiers(session, event_id, arena_tiers(hall), layout_prices={"Front": 1})
