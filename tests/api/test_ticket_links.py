"""An order's tickets as one PDF: for the signed-in fan, or through the emailed link whose
key is the credential; every wrong way in is refused with its own problem type."""

from __future__ import annotations

import re
import uuid

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from booking.keys import load_signing_keys
from booking.settings import Settings
from booking.tickets.links import order_link_key, order_link_key_matches
from tests.api.conftest import SignedIn
from tests.factories import make_event

PAGE = re.compile(rb"/Type\s*/Page\b(?!s)")


async def _buy(api: AsyncTestClient[Litestar], session: AsyncSession, fan: SignedIn, seats: int) -> str:
    event = await make_event(session, seats=4, ga_capacity=1)
    hold = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": event.seat_ids[:seats]},
        headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert hold.status_code == 201, hold.text
    paid = await api.post(
        f"/holds/{hold.json()['id']}/checkout",
        json={"provider": "offline", "card_number": "4242 4242 4242 4242"},
        headers=fan.headers,
    )
    assert paid.json()["status"] == "confirmed", paid.text
    return str(paid.json()["order_id"])


def _key(settings: Settings, order_id: str) -> str:
    return order_link_key(load_signing_keys(settings).token_secret, uuid.UUID(order_id))


async def test_the_fan_and_the_link_get_a_page_per_ticket(
    api: AsyncTestClient[Litestar], session: AsyncSession, settings: Settings, fan_a: SignedIn
) -> None:
    order_id = await _buy(api, session, fan_a, seats=3)
    signed_in = await api.get(f"/orders/{order_id}/tickets.pdf", headers=fan_a.headers)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.content.startswith(b"%PDF-")
    assert len(PAGE.findall(signed_in.content)) == 3
    linked = await api.get(f"/orders/{order_id}/tickets.pdf", params={"key": _key(settings, order_id)})
    assert linked.status_code == 200
    # The same tickets drawn the same way: a download is a function of the tickets alone.
    assert linked.content == signed_in.content


async def test_wrong_ways_in_are_refused_each_with_its_problem(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    settings: Settings,
    fan_a: SignedIn,
    fan_b: SignedIn,
) -> None:
    order_id = await _buy(api, session, fan_a, seats=1)
    other_order = await _buy(api, session, fan_b, seats=1)
    path = f"/orders/{order_id}/tickets.pdf"

    anonymous = await api.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")

    other_fan = await api.get(path, headers=fan_b.headers)
    assert other_fan.status_code == 404
    assert other_fan.json()["type"].endswith("order-not-found")

    key = _key(settings, order_id)
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), _key(settings, other_order), "x", "ключ"):
        refused = await api.get(path, params={"key": wrong})
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"].endswith("ticket-link-invalid")

    too_long = await api.get(path, params={"key": "k" * 65})
    assert too_long.status_code == 400
    assert too_long.headers["content-type"].startswith("application/problem+json")

    # A key made for an order that does not exist opens nothing and says so.
    missing = str(uuid.uuid4())
    nothing = await api.get(f"/orders/{missing}/tickets.pdf", params={"key": _key(settings, missing)})
    assert nothing.status_code == 404
    assert nothing.json()["type"].endswith("order-not-found")


async def test_a_cancelled_orders_link_shows_no_code(
    api: AsyncTestClient[Litestar], session: AsyncSession, settings: Settings, fan_a: SignedIn
) -> None:
    order_id = await _buy(api, session, fan_a, seats=2)
    cancelled = await api.post(f"/orders/{order_id}/cancel", headers=fan_a.headers)
    assert cancelled.status_code == 200, cancelled.text
    answer = await api.get(f"/orders/{order_id}/tickets.pdf", params={"key": _key(settings, order_id)})
    assert answer.status_code == 409
    assert answer.json()["type"].endswith("ticket-revoked")


def test_a_key_is_bound_to_its_order_and_secret() -> None:
    order = uuid.uuid4()
    key = order_link_key(b"s" * 32, order)
    assert len(key) == 22
    assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
    assert order_link_key_matches(b"s" * 32, order, key)
    assert not order_link_key_matches(b"t" * 32, order, key)
    assert not order_link_key_matches(b"s" * 32, uuid.uuid4(), key)
    assert not order_link_key_matches(b"s" * 32, order, "ключ\udc80")
