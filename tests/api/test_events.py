from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.catalog.demo import EVENTS, load_demo
from booking.catalog.models import Category
from booking.settings import Settings
from tests.factories import make_event

PROBLEM = "application/problem+json"


@pytest.fixture
async def client(settings: Settings, session: AsyncSession) -> AsyncIterator[AsyncTestClient[Litestar]]:
    await load_demo(session)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def test_events_lists_the_demo_events(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/events", params={"limit": 100})
    assert response.status_code == 200
    body = response.json()
    assert {item["slug"] for item in body["items"]} == {event.slug for event in EVENTS}
    starts = [item["starts_at"] for item in body["items"]]
    assert starts == sorted(starts)
    first = body["items"][0]
    assert first["venue"]["name"]
    assert first["price_from"]["currency"] in {"GBP", "EUR"}
    assert any(item["on_sale_now"] for item in body["items"])
    assert not all(item["on_sale_now"] for item in body["items"])
    assert body["next_cursor"] is None


async def test_cursor_pagination_visits_every_event_once(client: AsyncTestClient[Litestar]) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/events", params=params)).json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(EVENTS)
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "MjAyNi0xMS0yOHxub3QtYS11dWlk"},  # a time and a broken id
        {"limit": 0},
        {"limit": 101},
        {"limit": "many"},
        {"cursor": "x" * 500},
    ],
)
async def test_bad_query_parameters_are_a_clear_problem(
    client: AsyncTestClient[Litestar], params: dict[str, object]
) -> None:
    response = await client.get("/events", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"].startswith("https://boxoffice.dev/problems/")
    assert body["status"] == 400
    assert body["title"]


async def test_unknown_routes_and_methods_are_problems(client: AsyncTestClient[Litestar]) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM)
    assert missing.json()["type"].endswith("/not-found")
    wrong = await client.delete("/events")
    assert wrong.status_code == 405
    assert wrong.json()["type"].endswith("/method-not-allowed")


async def test_openapi_schema_is_published(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert "/events" in response.json()["paths"]


async def _find(client: AsyncTestClient[Litestar], **params: object) -> dict[str, Any]:
    response = await client.get("/events", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _slugs(body: dict[str, Any]) -> list[str]:
    return [item["slug"] for item in body["items"]]


def _facets(body: dict[str, Any]) -> dict[str, int]:
    return {facet["category"]: facet["count"] for facet in body["facets"]["category"]}


async def test_a_title_match_ranks_above_a_description_only_match(client: AsyncTestClient[Litestar]) -> None:
    body = await _find(client, q="live")
    slugs = _slugs(body)
    # "Mara Quinn Live" has the word in its title; Nachtwerk only in "Techno live set".
    assert slugs.index("mara-quinn-manchester") < slugs.index("nachtwerk-berlin")
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[slugs.index("nachtwerk-berlin")]


async def test_a_misspelt_keyword_still_finds_the_title(client: AsyncTestClient[Litestar]) -> None:
    assert _slugs(await _find(client, q="gruffallo"))[0] == "the-gruffalo-dublin"
    assert _slugs(await _find(client, q="Mahlr"))[0] == "london-philharmonic-mahler"


async def test_a_keyword_matches_word_prefixes_and_the_venue(client: AsyncTestClient[Litestar]) -> None:
    assert "aurora-lights-london" in _slugs(await _find(client, q="light"))
    # Every event at the Riverside Theatre, by its venue name.
    assert set(_slugs(await _find(client, q="riverside theatre"))) >= {
        "hamlet-dublin",
        "the-gruffalo-dublin",
        "ideas-night-dublin",
    }
    assert _slugs(await _find(client, q="zzzyzzx")) == []


async def test_without_a_keyword_there_is_no_score(client: AsyncTestClient[Litestar]) -> None:
    body = await _find(client, city="Dublin")
    assert all("score" not in item and "distance_km" not in item for item in body["items"])


async def test_filter_by_city_ignores_case(client: AsyncTestClient[Litestar]) -> None:
    london = {e.slug for e in EVENTS if e.venue == "harbour-arena"}
    assert set(_slugs(await _find(client, city="london"))) == london
    assert set(_slugs(await _find(client, city="LONDON"))) == london
    assert _slugs(await _find(client, city="Atlantis")) == []


async def test_filter_by_venue(client: AsyncTestClient[Litestar]) -> None:
    everything = await _find(client)
    foundry = next(
        item["venue"]["id"] for item in everything["items"] if item["venue"]["name"] == "The Foundry"
    )
    expected = {e.slug for e in EVENTS if e.venue == "the-foundry"}
    assert set(_slugs(await _find(client, venue=foundry))) == expected
    assert _slugs(await _find(client, venue=str(uuid.uuid4()))) == []


async def test_filter_by_category(client: AsyncTestClient[Litestar]) -> None:
    assert set(_slugs(await _find(client, category="comedy"))) == {
        e.slug for e in EVENTS if e.category == Category.COMEDY
    }


async def test_filter_by_price_range(client: AsyncTestClient[Litestar]) -> None:
    def in_range(low: int, high: int) -> set[str]:
        return {e.slug for e in EVENTS if any(low <= price <= high for _, price, _ in e.tiers)}

    assert set(_slugs(await _find(client, price_max=1500))) == in_range(0, 1500)
    assert (
        set(_slugs(await _find(client, price_min=10000)))
        == in_range(10000, 10**12)
        == {"city-derby-basketball"}
    )
    assert set(_slugs(await _find(client, price_min=2000, price_max=2000))) == in_range(2000, 2000)


async def test_filter_by_on_sale_now(client: AsyncTestClient[Litestar]) -> None:
    later = {e.slug for e in EVENTS if e.onsale_in_days is not None}
    assert set(_slugs(await _find(client, on_sale_now="false"))) == later
    now = await _find(client, on_sale_now="true")
    assert set(_slugs(now)) == {e.slug for e in EVENTS} - later
    assert all(item["on_sale_now"] for item in now["items"])


async def test_filter_by_distance_from_a_point(client: AsyncTestClient[Litestar]) -> None:
    manchester = {"lat": 53.4808, "lon": -2.2426}
    body = await _find(client, radius_km=100, **manchester)
    assert set(_slugs(body)) == {e.slug for e in EVENTS if e.venue == "the-foundry"}
    assert all(item["distance_km"] < 1 for item in body["items"])
    # lat/lon alone use the default radius (50 km): Dublin is some 260 km away.
    assert set(_slugs(await _find(client, **manchester))) == set(_slugs(body))
    wide = await _find(client, radius_km=2000, **manchester)
    assert len(wide["items"]) == len(EVENTS)


def _local_date(item: dict[str, Any]) -> dt.date:
    return dt.datetime.fromisoformat(item["starts_at"]).astimezone(ZoneInfo(item["timezone"])).date()


async def test_filter_by_dates_in_venue_time(client: AsyncTestClient[Litestar]) -> None:
    everything = (await _find(client))["items"]
    first, last = _local_date(everything[3]), _local_date(everything[8])
    body = await _find(client, date_from=first.isoformat(), date_to=last.isoformat())
    # A bare date is a whole day at the venue, both ends included.
    assert _slugs(body) == [item["slug"] for item in everything if first <= _local_date(item) <= last]
    assert len(body["items"]) >= 6


async def test_filter_by_instants_and_venue_local_times(client: AsyncTestClient[Litestar]) -> None:
    target = (await _find(client, q="aurora"))["items"][0]
    # An instant with an offset: both ends inclusive.
    exact = await _find(client, date_from=target["starts_at"], date_to=target["starts_at"])
    assert target["slug"] in _slugs(exact)
    assert all(item["starts_at"] == target["starts_at"] for item in exact["items"])
    # A time without an offset is the wall clock at the venue (demo shows start 19:30 local).
    day = _local_date(target).isoformat()
    local = await _find(client, date_from=f"{day}T19:30", date_to=f"{day}T19:30", city="London")
    assert _slugs(local) == [target["slug"]]
    assert _slugs(await _find(client, date_from=f"{day}T19:31", date_to=f"{day}T23:59", city="London")) == []


async def test_facets_count_categories_under_the_other_filters(client: AsyncTestClient[Litestar]) -> None:
    london = [e for e in EVENTS if e.venue == "harbour-arena"]
    expected = {category.value: sum(e.category == category for e in london) for category in Category}
    body = await _find(client, city="London", category="music")
    assert set(_slugs(body)) == {e.slug for e in london if e.category == Category.MUSIC}
    # The category filter itself is left out of the counts; the city is not.
    assert _facets(body) == expected
    assert [facet["category"] for facet in body["facets"]["category"]] == [c.value for c in Category]
    assert _facets(await _find(client, city="London", category="talk")) == expected
    unfiltered = _facets(await _find(client))
    assert sum(unfiltered.values()) == len(EVENTS)
    assert _facets(await _find(client, q="zzzyzzx")) == dict.fromkeys(expected, 0)


async def test_keyword_pagination_visits_every_result_once_in_rank_order(
    client: AsyncTestClient[Litestar],
) -> None:
    whole = await _find(client, q="london")
    assert len(whole["items"]) >= 5
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, str | int] = {"q": "london", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/events", params=params)).json()
        seen += [item["id"] for item in body["items"]]
        assert body["facets"] == whole["facets"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in whole["items"]]


async def test_a_cursor_only_continues_the_search_it_came_from(client: AsyncTestClient[Litestar]) -> None:
    ranked = (await client.get("/events", params={"q": "london", "limit": 1})).json()["next_cursor"]
    dated = (await client.get("/events", params={"limit": 1})).json()["next_cursor"]
    for params in (
        {"q": "hamlet", "cursor": ranked},
        {"cursor": ranked},
        {"q": "london", "cursor": dated},
        {"city": "London", "cursor": dated},
    ):
        response = await client.get("/events", params=params)
        assert response.status_code == 400
        assert response.json()["type"].endswith("/invalid-cursor")


async def test_event_detail_has_venue_tiers_and_availability(client: AsyncTestClient[Litestar]) -> None:
    summary = (await _find(client, q="aurora"))["items"][0]
    response = await client.get(f"/events/{summary['id']}")
    assert response.status_code == 200
    body = response.json()
    spec = next(e for e in EVENTS if e.slug == "aurora-lights-london")
    assert body["title"] == spec.title
    assert body["description"] == spec.description
    assert body["venue"]["name"] == "Harbour Arena"
    assert body["venue"]["latitude"] == pytest.approx(51.503)
    assert [tier["name"] for tier in body["tiers"]] == [name for name, _, _ in spec.tiers]
    tiers = {tier["name"]: tier for tier in body["tiers"]}
    assert tiers["Stalls Centre"]["price"] == {"amount_minor": 8500, "currency": "GBP"}
    assert tiers["Stalls Centre"]["kind"] == "seated"
    assert tiers["Stalls Centre"]["total"] == tiers["Stalls Centre"]["available"] == 20 * 30
    assert tiers["Standing"]["kind"] == "ga"
    assert tiers["Standing"]["total"] == tiers["Standing"]["available"] == 1000
    assert body["on_sale_now"] is True


@pytest.mark.parametrize("path", [f"/events/{uuid.UUID(int=0)}", "/events/not-an-id"])
async def test_an_unknown_event_is_a_404_problem(client: AsyncTestClient[Litestar], path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == 404


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"date_from": "next tuesday"}, "date_from"),
        ({"date_to": "2026-13-45"}, "date_to"),
        ({"date_from": "0001-01-01"}, "date_from"),
        ({"date_from": "2027-03-02", "date_to": "2027-03-01"}, "date_from is after date_to"),
        ({"date_from": "2027-03-01T20:00", "date_to": "2027-03-01T19:00"}, "date_from is after date_to"),
        ({"radius_km": 10}, "radius_km"),
        ({"lat": 51.5}, "lat and lon"),
        ({"lon": -0.1, "radius_km": 5}, "lat and lon"),
        ({"lat": 91, "lon": 0}, "lat"),
        ({"lat": 51.5, "lon": 0, "radius_km": 0}, "radius_km"),
        ({"lat": "north", "lon": 0}, "lat"),
        ({"lat": "nan", "lon": 0}, "lat"),
        ({"lat": 0, "lon": 0, "radius_km": "inf"}, "radius_km"),
        ({"city": "Lon\x00don"}, "city"),
        ({"q": "a\x00b", "date_from": "2026-01-01\x00"}, "date_from"),
        ({"price_min": -1}, "price_min"),
        ({"price_max": -500}, "price_max"),
        ({"price_min": 10**15}, "price_min"),
        ({"price_min": 5000, "price_max": 100}, "price_min is above price_max"),
        ({"category": "opera"}, "Unknown category"),
        ({"q": "!!! ???"}, "letter or digit"),
        ({"q": "x" * 201}, "q"),
        ({"venue": "the-foundry"}, "venue"),
        ({"on_sale_now": "perhaps"}, "on_sale_now"),
        ({"limit": 10**9}, "limit"),
        ({"limit": -5}, "limit"),
        ({"q": "london", "cursor": "bm90IGEgY3Vyc29y"}, "next_cursor"),
    ],
)
async def test_bad_search_input_is_a_clear_400(
    client: AsyncTestClient[Litestar], params: dict[str, object], mentions: str
) -> None:
    response = await client.get("/events", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 400
    assert mentions in f"{body['detail']} {body.get('errors', '')}"


async def test_an_event_is_found_by_its_slug_as_by_its_id(client: AsyncTestClient[Litestar]) -> None:
    summary = (await _find(client, q="aurora"))["items"][0]
    by_id = await client.get(f"/events/{summary['id']}")
    by_slug = await client.get(f"/events/{summary['slug']}")
    assert by_slug.status_code == 200, by_slug.text
    assert by_slug.json() == by_id.json()
    assert by_slug.json()["slug"] == "aurora-lights-london"
    # The other routes under the event take the slug too.
    for what in ("seatmap", "availability"):
        with_id = await client.get(f"/events/{summary['id']}/{what}")
        with_slug = await client.get(f"/events/{summary['slug']}/{what}")
        assert with_slug.status_code == 200, (what, with_slug.text)
        assert with_slug.json()["event_id"] == summary["id"]
        assert with_slug.json()["tiers"] == with_id.json()["tiers"]


def test_the_event_by_slug_is_cached_as_by_id(client: AsyncTestClient[Litestar]) -> None:
    (detail,) = [
        handler
        for route in client.app.routes
        if route.path == "/events/{event_id:str}"
        for handler in route.route_handlers
        if "GET" in getattr(handler, "http_methods", ())
    ]
    assert detail.cache is True


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/events/no-such-event", "There is no event 'no-such-event'."),
        ("/events/no-such-event/seatmap", "There is no event 'no-such-event'."),
        ("/events/no-such-event/availability", "There is no event 'no-such-event'."),
        ("/events/" + "x" * 121, "its id (a uuid) or its slug"),
        ("/events/a%00b/seatmap", "its id (a uuid) or its slug"),
        ("/events/a%0Ab/availability", "its id (a uuid) or its slug"),
    ],
)
async def test_what_names_no_event_is_a_404_saying_what_is_expected(
    client: AsyncTestClient[Litestar], path: str, detail: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"].endswith("/event-not-found")
    assert detail in body["detail"]


async def test_a_drafts_slug_is_an_unknown_event(
    client: AsyncTestClient[Litestar], session: AsyncSession
) -> None:
    draft = await make_event(session, seats=1, ga_capacity=1)
    slug = await session.scalar(
        text("UPDATE events SET status = 'draft' WHERE id = :e RETURNING slug"), {"e": draft.event_id}
    )
    await session.commit()
    for path in (f"/events/{slug}", f"/events/{slug}/availability"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert str(draft.event_id) not in response.text
