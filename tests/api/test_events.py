from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.catalog.demo import EVENTS, load_demo
from booking.settings import Settings

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


async def test_health_reports_both_servers(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_health_is_503_when_redis_is_gone(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with AsyncTestClient(app=create_app(broken)) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["redis"] == "unavailable"


async def test_openapi_schema_is_published(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert "/events" in response.json()["paths"]
