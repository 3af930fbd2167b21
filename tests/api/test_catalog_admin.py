"""Catalog administration over HTTP: from a venue to an event on sale and back to cancelled,
each step audited; every refusal a problem with its stable type, changing nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.ops import audit
from tests.api.conftest import SignedIn
from tests.catalog_data import Arena, make_arena

EVENT = {
    "title": "Harbour Lights",
    "performer": "The Harbour Band",
    "category": "music",
    "starts_at": "2031-06-20T20:00:00",  # the venue's wall clock: Europe/London
    "onsale_starts_at": "2025-01-10T09:00:00+00:00",
    "currency": "GBP",
    "max_tickets_per_fan": 4,
    "tiers": [
        {"name": "Front", "price_minor": 6000, "sections": ["Block 1"]},
        {"name": "Back", "price_minor": 4000, "sections": ["Block 2"]},
        {"name": "Floor", "price_minor": 3000, "ga_area": "Standing Floor"},
    ],
}


@pytest.fixture
async def hall(session: AsyncSession) -> Arena:
    return await make_arena(session, sections=2, rows=2, seats_per_row=5, standing=20)


@pytest.fixture
async def admin_headers(session: AsyncSession) -> dict[str, str]:
    issued = await create_key(session, f"organiser-{uuid.uuid4().hex[:6]}", StaffRole.ADMIN)
    await session.commit()
    return {"Authorization": f"Bearer {issued.secret}"}


def _problem(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).rsplit("/", 1)[-1]


async def test_an_organiser_takes_an_event_from_a_venue_to_on_sale_and_to_cancelled(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    hall: Arena,
    admin_headers: dict[str, str],
    fan_a: SignedIn,
) -> None:
    venues = (await api.get("/staff/catalog/venues", headers=admin_headers)).json()["items"]
    (venue,) = [v for v in venues if v["slug"] == hall.slug]
    (layout,) = venue["layouts"]
    assert (layout["seats"], layout["ga_places"], layout["ga_areas"]) == (20, 20, ["Standing Floor"])

    created = await api.post(
        "/staff/catalog/events", json={**EVENT, "venue": hall.slug}, headers=admin_headers
    )
    assert created.status_code == 201, created.text
    event = created.json()
    event_id = event["id"]
    assert (event["status"], event["phase"], event["places"], event["slug"]) == (
        "draft",
        "draft",
        40,
        "harbour-lights-leeds-2031-06-20",
    )
    assert event["starts_at"].startswith("2031-06-20T19:00:00")  # 20:00 BST
    assert [(t["name"], t["places"], t["covers"]) for t in event["tiers"]][:1] == [
        ("Front", 10, [{"name": "Block 1", "places": 10}])
    ]
    # A draft is nobody's to see.
    assert (await api.get(f"/events/{event_id}")).status_code == 404

    changed = await api.patch(
        f"/staff/catalog/events/{event_id}",
        json={"description": "Sea shanties, loud.", "hold_ttl_seconds": 300},
        headers=admin_headers,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["description"], changed.json()["hold_ttl_seconds"]) == ("Sea shanties, loud.", 300)
    repriced = await api.patch(
        f"/staff/catalog/events/{event_id}/prices",
        json={"prices": [{"tier": "Floor", "price_minor": 3500}]},
        headers=admin_headers,
    )
    assert [t["price"]["amount_minor"] for t in repriced.json()["tiers"]] == [6000, 4000, 3500]
    on_sale = await api.post(f"/staff/catalog/events/{event_id}/on-sale", headers=admin_headers)
    assert on_sale.status_code == 200, on_sale.text
    assert on_sale.json()["phase"] == "on_sale"

    # Fans see it and buy from it.
    public = (await api.get(f"/events/{event_id}")).json()
    floor = next(t for t in public["tiers"] if t["name"] == "Floor")
    held = await api.post(
        "/holds",
        json={"event_id": event_id, "tier_id": floor["id"], "quantity": 2},
        headers={**fan_a.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert held.status_code == 201, held.text
    assert held.json()["total"]["amount_minor"] == 7000
    view = (await api.get(f"/staff/catalog/events/{event_id}", headers=admin_headers)).json()
    assert view["held"] == 2

    cancelled = await api.post(f"/staff/catalog/events/{event_id}/cancel", headers=admin_headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["holds_released"]) == ("cancelled", 1)
    # (The public page is cached for a second: the organiser's view is read at once.)
    after = (await api.get(f"/staff/catalog/events/{event_id}", headers=admin_headers)).json()
    assert (after["phase"], after["held"]) == ("cancelled", 0)

    entries = list(reversed(await audit.tail(session, limit=5)))
    assert [(e.action, e.outcome, e.target_id) for e in entries] == [
        ("event.create", "ok", event_id),
        ("event.change", "ok", event_id),
        ("event.prices", "ok", event_id),
        ("event.on_sale", "ok", event_id),
        ("event.cancel", "ok", event_id),
    ]
    assert entries[1].details["fields"] == ["description", "hold_ttl_seconds"]
    assert entries[4].details["holds_released"] == 1


async def test_refusals_are_problems_with_stable_types_and_change_nothing(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    hall: Arena,
    admin_headers: dict[str, str],
) -> None:
    base: dict[str, Any] = {**EVENT, "venue": hall.slug}
    gap = {**base, "tiers": base["tiers"][:1] + base["tiers"][2:]}  # Block 2 unpriced
    refused = await api.post("/staff/catalog/events", json=gap, headers=admin_headers)
    assert (refused.status_code, _problem(refused)) == (400, "tiers-invalid")
    assert refused.json()["problems"] == ["10 seats of section 'Block 2' are priced by no tier (rows A, B)"]
    for body, status, code in (
        ({**base, "category": "opera"}, 400, "invalid-request"),
        ({**base, "surprise": True}, 400, "invalid-request"),
        ({**base, "venue": "atlantis"}, 404, "venue-not-found"),
        ({**base, "layout": "Theatre"}, 404, "layout-not-found"),
        ({**base, "ends_at": "2031-06-20T18:00:00Z"}, 400, "invalid-request"),
        ({**base, "max_tickets_per_fan": 50}, 400, "invalid-request"),
        ({**base, "starts_at": "0001-01-01T00:00:00"}, 400, "invalid-request"),
    ):
        answer = await api.post("/staff/catalog/events", json=body, headers=admin_headers)
        assert (answer.status_code, _problem(answer)) == (status, code), (body, answer.text)
    assert await session.scalar(text("SELECT count(*) FROM events")) == 0

    event_id = (await api.post("/staff/catalog/events", json=base, headers=admin_headers)).json()["id"]
    slug_taken = await api.post(
        "/staff/catalog/events",
        json={**base, "slug": "harbour-lights-leeds-2031-06-20"},
        headers=admin_headers,
    )
    assert (slug_taken.status_code, _problem(slug_taken)) == (409, "event-slug-taken")
    off = await api.post(f"/staff/catalog/events/{event_id}/off-sale", headers=admin_headers)
    assert (off.status_code, _problem(off)) == (409, "event-state-conflict")
    assert (off.json()["status"], off.json()["event_status"]) == (409, "draft")
    unknown = await api.patch(
        f"/staff/catalog/events/{event_id}/prices",
        json={"prices": [{"tier": "VIP", "price_minor": 1}]},
        headers=admin_headers,
    )
    assert (unknown.status_code, _problem(unknown)) == (404, "price-tier-not-found")
    missing = await api.get(f"/staff/catalog/events/{uuid.uuid4()}", headers=admin_headers)
    assert (missing.status_code, _problem(missing)) == (404, "event-not-found")

    # The layout grows after the tiers were set: the sale is refused until they are set again.
    await session.execute(
        text(
            "INSERT INTO seats (row_id, number, x, y) SELECT r.id, '6', 60, 0 FROM seat_rows r"
            " JOIN sections c ON c.id = r.section_id WHERE c.name = 'Block 2' AND r.label = 'B'"
        )
    )
    await session.commit()
    not_ready = await api.post(f"/staff/catalog/events/{event_id}/on-sale", headers=admin_headers)
    assert (not_ready.status_code, _problem(not_ready)) == (409, "event-not-ready")
    retiered = await api.put(
        f"/staff/catalog/events/{event_id}/tiers", json={"tiers": base["tiers"]}, headers=admin_headers
    )
    assert retiered.json()["places"] == 41
    opened = await api.post(
        f"/staff/catalog/events/{event_id}/on-sale", json={"open_now": True}, headers=admin_headers
    )
    assert opened.json()["phase"] == "on_sale"

    entries = list(reversed(await audit.tail(session, limit=20)))
    failed = [
        (e.action, e.details.get("problem", "").rsplit("/", 1)[-1]) for e in entries if e.outcome == "failed"
    ]
    assert ("event.create", "tiers-invalid") in failed
    assert ("event.off_sale", "event-state-conflict") in failed
    assert ("event.on_sale", "event-not-ready") in failed
