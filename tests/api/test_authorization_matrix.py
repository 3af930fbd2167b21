"""Every route of the API against {anonymous, the owner (fan A), another fan (B)}.

The table below classifies every route the app serves; a route missing from it fails the
test, so a new route cannot ship without saying who may call it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from booking.payments import offline
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, make_event

PUBLIC = "public"  # anyone, same answer
FAN = "fan"  # a signed-in fan, about their own things: anonymous 401, another fan 404
SELF = "self"  # a signed-in fan, about themself (no id of someone else to try)
# A signed-in fan, about their own place in an event's waiting room: the event here has none
# to be in (tests/api/test_waiting_room_http.py walks a fan through one).
ROOM = "room"
# Anyone, and the answer never ends: not called here (tests/api/test_seatmap_stream.py).
STREAM = "stream"

# (method, path template) -> who may call it, and the request body when one is needed.
MATRIX: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("GET", "/health"): (PUBLIC, None),
    ("GET", "/ready"): (PUBLIC, None),
    ("GET", "/metrics"): (PUBLIC, None),
    ("GET", "/events"): (PUBLIC, None),
    # By id or slug.
    ("GET", "/events/{event_id:str}"): (PUBLIC, None),
    ("GET", "/events/{event_id:str}/seatmap"): (PUBLIC, None),
    ("GET", "/events/{event_id:str}/availability"): (PUBLIC, None),
    ("GET", "/events/{event_id:str}/seatmap/stream"): (STREAM, None),
    ("GET", "/ticket-key"): (PUBLIC, None),
    ("GET", "/ticket-keys"): (PUBLIC, None),
    ("GET", "/.well-known/jwks.json"): (PUBLIC, None),
    ("POST", "/fans"): (PUBLIC, None),
    ("POST", "/sessions"): (PUBLIC, None),
    ("POST", "/webhooks/stripe"): (PUBLIC, None),
    ("GET", "/me"): (SELF, None),
    ("DELETE", "/sessions/current"): (SELF, None),
    ("DELETE", "/sessions"): (SELF, None),
    ("POST", "/holds"): (SELF, {"event_id": "{event_id}", "seat_ids": ["{free_seat}"]}),
    ("GET", "/orders"): (SELF, None),
    ("GET", "/holds/{hold_id:uuid}"): (FAN, None),
    ("DELETE", "/holds/{hold_id:uuid}"): (FAN, None),
    ("POST", "/holds/{hold_id:uuid}/renew"): (FAN, None),
    ("POST", "/holds/{hold_id:uuid}/checkout"): (
        FAN,
        {"provider": "offline", "card_number": offline.SUCCESS},
    ),
    ("GET", "/orders/{order_id:uuid}"): (FAN, None),
    ("POST", "/orders/{order_id:uuid}/cancel"): (FAN, None),
    # Without the emailed link's key (tests/api/test_ticket_links.py covers the key).
    ("GET", "/orders/{order_id:uuid}/tickets.pdf"): (FAN, None),
    ("GET", "/tickets/{ticket_id:uuid}"): (FAN, None),
    ("GET", "/tickets/{ticket_id:uuid}/qr.svg"): (FAN, None),
    ("GET", "/tickets/{ticket_id:uuid}/ticket.pdf"): (FAN, None),
    ("POST", "/events/{event_id:str}/queue"): (ROOM, None),
    ("GET", "/events/{event_id:str}/queue/me"): (ROOM, None),
    ("DELETE", "/events/{event_id:str}/queue/me"): (ROOM, None),
    ("GET", "/events/{event_id:str}/queue/me/stream"): (ROOM, None),
}


def served_routes(app: Litestar) -> set[tuple[str, str]]:
    routes = set()
    for route in app.routes:
        if route.path.startswith(("/schema", "/staff")):
            continue  # the OpenAPI documents (public, generated); staff routes: test_staff_roles
        for method in getattr(route, "methods", set()):
            if method not in ("OPTIONS", "HEAD"):
                routes.add((method, route.path))
    return routes


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=2)


async def _owned(api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent) -> dict[str, str]:
    """A's things: a live hold, and a paid order with its ticket."""
    ids: dict[str, str] = {"event_id": str(event.event_id), "free_seat": str(event.seat_ids[9])}
    for name, seat in (("hold_id", event.seat_ids[0]), ("paid_hold", event.seat_ids[1])):
        response = await api.post(
            "/holds",
            json={"event_id": str(event.event_id), "seat_ids": [seat]},
            headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        ids[name] = response.json()["id"]
    paid = await api.post(
        f"/holds/{ids['paid_hold']}/checkout",
        json={"provider": "offline", "card_number": offline.SUCCESS},
        headers=fan.headers,
    )
    ids["order_id"] = paid.json()["order_id"]
    order = await api.get(f"/orders/{ids['order_id']}", headers=fan.headers)
    ids["ticket_id"] = order.json()["lines"][0]["ticket_id"]
    return ids


def _fill(template: str, ids: dict[str, str]) -> str:
    # Checkout goes to the paid hold: paying for it again answers with its order, and the
    # live hold stays free for renew and release.
    path = template.replace("{hold_id:uuid}/checkout", f"{ids['paid_hold']}/checkout")
    path = path.replace("{event_id:str}", ids["event_id"])
    for name in ("event_id", "hold_id", "order_id", "ticket_id"):
        path = path.replace(f"{{{name}:uuid}}", ids[name])
    return path


def _body(body: dict[str, Any] | None, ids: dict[str, str]) -> dict[str, Any] | None:
    if body is None:
        return None
    filled: dict[str, Any] = {}
    for key, value in body.items():
        if value == "{event_id}":
            filled[key] = ids["event_id"]
        elif value == ["{free_seat}"]:
            filled[key] = [int(ids["free_seat"])]
        else:
            filled[key] = value
    return filled


async def _call(
    api: AsyncTestClient[Litestar],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> int:
    headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    response = await api.request(method, path, json=body, headers=headers)
    assert response.status_code < 500, (method, path, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), (method, path)
    return response.status_code


async def test_every_route_is_in_the_matrix(api: AsyncTestClient[Litestar]) -> None:
    assert served_routes(api.app) == set(MATRIX)


async def test_anonymous_callers_get_401_on_every_fan_route(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn
) -> None:
    ids = await _owned(api, fan_a, event)
    for (method, template), (who, body) in MATRIX.items():
        if who == STREAM:
            continue
        status = await _call(api, method, _fill(template, ids), _body(body, ids), {})
        if who == PUBLIC:
            assert status != 401, (method, template)
        else:
            assert status == 401, (method, template, status)


async def test_another_fan_gets_404_for_everything_of_the_owner_and_changes_nothing(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, fan_b: SignedIn
) -> None:
    ids = await _owned(api, fan_a, event)
    for (method, template), (who, body) in MATRIX.items():
        if who != FAN:
            continue
        status = await _call(api, method, _fill(template, ids), _body(body, ids), fan_b.headers)
        assert status == 404, (method, template, status)
    hold = await api.get(f"/holds/{ids['hold_id']}", headers=fan_a.headers)
    assert hold.json()["state"] == "active"
    order = await api.get(f"/orders/{ids['order_id']}", headers=fan_a.headers)
    assert order.json()["state"] == "confirmed"


async def test_the_owner_reaches_everything_of_theirs(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn
) -> None:
    ids = await _owned(api, fan_a, event)
    # Destructive routes last, so the others still find their subject.
    ordered = sorted(MATRIX.items(), key=lambda item: item[0][0] in ("DELETE",) or "cancel" in item[0][1])
    for (method, template), (who, body) in ordered:
        if who not in (FAN, SELF) or template.startswith("/sessions"):
            continue
        status = await _call(api, method, _fill(template, ids), _body(body, ids), fan_a.headers)
        assert status < 400, (method, template, status)
