"""Event search against real PostgreSQL: documents, ranking, typo tolerance, freshness."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking import migrations
from booking.catalog import service
from booking.catalog.models import Event, EventSearch, Venue
from booking.catalog.search import (
    EVENT_CHANGED,
    EventFilters,
    emit_event_changed,
    refresh_search_documents,
)
from booking.db import engine_scope, make_sessionmaker
from booking.errors import EventNotFound, InvalidRequest
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.outbox import OutboxMessage
from booking.settings import get_settings
from jobs.search import refresh_event_search
from tests.factories import SmallEvent, advance_clock, make_event, make_fan


async def _retitle(session: AsyncSession, event_id: uuid.UUID, title: str, description: str = "") -> None:
    await session.execute(
        update(Event).where(Event.id == event_id).values(title=title, description=description)
    )
    await session.commit()


async def _find(session: AsyncSession, q: str, **filters: Any) -> list[uuid.UUID]:
    page = await service.list_events(session, EventFilters.parse(q=q, **filters), limit=100)
    return [item.id for item in page.items]


@pytest.fixture
async def band(session: AsyncSession) -> SmallEvent:
    event = await make_event(session)
    await _retitle(session, event.event_id, "Metallica: M72 World Tour", "Heavy metal, two nights.")
    await refresh_search_documents(session, [event.event_id])
    await session.commit()
    return event


@pytest.fixture
async def tribute(session: AsyncSession) -> SmallEvent:
    event = await make_event(session)
    await _retitle(session, event.event_id, "Garage Night", "Covers of Metallica and Megadeth.")
    await refresh_search_documents(session, [event.event_id])
    await session.commit()
    return event


async def test_title_match_ranks_above_description_match(
    session: AsyncSession, band: SmallEvent, tribute: SmallEvent
) -> None:
    page = await service.list_events(session, EventFilters.parse(q="metallica"))
    assert [item.id for item in page.items] == [band.event_id, tribute.event_id]
    first, second = (item.score for item in page.items)
    assert first is not None
    assert second is not None
    assert first > second > 0


async def test_a_typo_finds_what_the_word_finds(
    session: AsyncSession, band: SmallEvent, tribute: SmallEvent
) -> None:
    # No word starts with "metalica"; it is corrected to the title word "metallica", which
    # the tribute's description has too, so both are found, the title match first.
    assert await _find(session, "metalica") == [band.event_id, tribute.event_id]
    assert await _find(session, "metallica tuor") == [band.event_id]


async def test_prefixes_match_while_typing(session: AsyncSession, band: SmallEvent) -> None:
    assert await _find(session, "metal") == [band.event_id]
    assert await _find(session, "M72 WORLD") == [band.event_id]


async def test_the_document_weighs_the_venue_and_city(session: AsyncSession, band: SmallEvent) -> None:
    assert await _find(session, "testville") == [band.event_id]
    assert await _find(session, "test hall") == [band.event_id]


async def test_the_document_follows_the_event_only_when_refreshed(
    session: AsyncSession, band: SmallEvent
) -> None:
    await _retitle(session, band.event_id, "Slayer Reunion")
    # Until the outbox-driven refresh runs, search still sees the old document.
    assert await _find(session, "slayer") == []
    assert await _find(session, "metallica") == [band.event_id]
    assert await refresh_search_documents(session, [band.event_id]) == 1
    await session.commit()
    assert await _find(session, "slayer") == [band.event_id]
    assert await _find(session, "metallica") == []
    # Again, and for an id that does not exist: nothing changes, nothing fails.
    assert await refresh_search_documents(session, [band.event_id, uuid.uuid4()]) == 1
    assert await refresh_search_documents(session, []) == 0


async def test_a_venue_rename_reaches_search_through_a_refresh(
    session: AsyncSession, band: SmallEvent
) -> None:
    venue_id = await session.scalar(select(Event.venue_id).where(Event.id == band.event_id))
    await session.execute(update(Venue).where(Venue.id == venue_id).values(name="Roundhouse"))
    await session.commit()
    assert await _find(session, "roundhouse") == []
    await refresh_search_documents(session, [band.event_id])
    await session.commit()
    assert await _find(session, "roundhouse") == [band.event_id]


async def test_event_changed_is_recorded_on_the_outbox(session: AsyncSession, band: SmallEvent) -> None:
    await emit_event_changed(session, band.event_id)
    await session.commit()
    row = (
        await session.execute(select(OutboxMessage).where(OutboxMessage.topic == EVENT_CHANGED))
    ).scalar_one()
    assert row.payload == {"event_id": str(band.event_id)}
    assert row.catalog_event_id == band.event_id


@pytest.fixture
def job_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("job_env")
async def test_the_job_refreshes_one_event(session: AsyncSession, band: SmallEvent) -> None:
    await _retitle(session, band.event_id, "Slayer Reunion")
    assert await refresh_event_search(str(band.event_id)) == 1
    assert await _find(session, "slayer") == [band.event_id]
    assert await refresh_event_search(str(uuid.uuid4())) == 0


async def test_keyword_pages_with_equal_scores_visit_each_event_once(session: AsyncSession) -> None:
    events = [await make_event(session) for _ in range(5)]
    await refresh_search_documents(session, [e.event_id for e in events])
    await session.commit()
    filters = EventFilters.parse(q="testers")
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await service.list_events(session, filters, limit=2, cursor=cursor)
        seen += [item.id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(e.event_id for e in events)
    assert len(set(seen)) == len(seen)


async def test_availability_counts_expired_holds_as_free(session: AsyncSession, band: SmallEvent) -> None:
    policy = HoldPolicy()
    late = Owner(fan_id=await make_fan(session))
    await holds.create_hold(
        session,
        owner=late,
        event_id=band.event_id,
        selection=SeatSelection(tuple(band.seat_ids[:3])),
        policy=policy,
    )
    await session.commit()
    await advance_clock(session, policy.ttl.total_seconds() + 60)
    live = Owner(fan_id=await make_fan(session))
    await holds.create_hold(
        session,
        owner=live,
        event_id=band.event_id,
        selection=SeatSelection(tuple(band.seat_ids[5:7])),
        policy=policy,
    )
    await session.commit()
    detail = await service.get_event(session, band.event_id)
    tiers = {tier.name: tier for tier in detail.tiers}
    # Three units are still marked held, but past their deadline: a new hold could take them.
    assert (tiers["Seated"].available, tiers["Seated"].total, tiers["Seated"].kind) == (8, 10, "seated")
    assert (tiers["Standing"].available, tiers["Standing"].total, tiers["Standing"].kind) == (20, 20, "ga")
    assert detail.venue.name == "Test Hall"
    assert detail.description == "Heavy metal, two nights."


async def test_drafts_and_unknown_ids_are_not_found(session: AsyncSession, band: SmallEvent) -> None:
    with pytest.raises(EventNotFound):
        await service.get_event(session, uuid.uuid4())
    await session.execute(text("UPDATE events SET status = 'draft' WHERE id = :e"), {"e": band.event_id})
    await session.commit()
    with pytest.raises(EventNotFound):
        await service.get_event(session, band.event_id)
    assert await _find(session, "metallica") == []


@pytest.mark.parametrize(
    "raw",
    [
        {"q": "   "},
        {"date_from": " "},
        {"category": ""},
    ],
)
def test_blank_values_mean_no_filter(raw: dict[str, Any]) -> None:
    assert EventFilters.parse(**raw) == EventFilters()


def test_filters_validate_however_they_are_built() -> None:
    with pytest.raises(InvalidRequest, match="price_min"):
        EventFilters(price_min=-1)
    with pytest.raises(InvalidRequest, match="after"):
        EventFilters.parse(date_from="2027-01-02T00:00:00+00:00", date_to="2027-01-01T12:00:00+00:00")
    with pytest.raises(InvalidRequest, match="lat"):
        EventFilters.parse(lat=float("nan"), lon=0.0)
    # A date as the upper end takes in the whole day, so a time on that day is inside it.
    EventFilters.parse(date_from="2027-01-01T22:00", date_to="2027-01-01")


async def test_the_migration_writes_documents_for_existing_events(empty_database_url: str) -> None:
    migrations.upgrade(empty_database_url, "0001")
    async with engine_scope(empty_database_url) as engine, make_sessionmaker(engine)() as session:
        event = await make_event(session)
    migrations.upgrade(empty_database_url)
    async with engine_scope(empty_database_url) as engine, make_sessionmaker(engine)() as session:
        written = await session.scalar(
            select(EventSearch.names).where(EventSearch.event_id == event.event_id)
        )
        assert written == "test night the testers"
        assert await _find(session, "testville") == [event.event_id]
        start = dt.datetime.now(dt.UTC).date().isoformat()
        assert await _find(session, "testers", date_from=start) == [event.event_id]
