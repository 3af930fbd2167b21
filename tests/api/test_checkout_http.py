"""The fan journey over HTTP with the offline provider: hold, pay with each test card, order,
tickets (JSON, QR, PDF), cancel; and no fan reaching another's orders or tickets."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.payments import offline
from booking.tickets.signing import verify
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, make_event


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=3)


async def _hold(api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent, seats: list[int]) -> str:
    response = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": seats},
        headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _pay(api: AsyncTestClient[Litestar], fan: SignedIn, hold_id: str, card: str) -> dict[str, object]:
    response = await api.post(
        f"/holds/{hold_id}/checkout", json={"provider": "offline", "card_number": card}, headers=fan.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_buy_with_a_good_card_then_fetch_tickets_and_cancel(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    hold_id = await _hold(api, fan_a, event, event.seat_ids[:2])
    paid = await _pay(api, fan_a, hold_id, "4242 4242 4242 4242")
    assert paid["status"] == "confirmed"
    order = (await api.get(f"/orders/{paid['order_id']}", headers=fan_a.headers)).json()
    assert order["state"] == "confirmed"
    assert [line["seat_id"] for line in order["lines"]] == event.seat_ids[:2]
    listed = (await api.get("/orders", headers=fan_a.headers)).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]

    ticket_id = order["lines"][0]["ticket_id"]
    ticket = (await api.get(f"/tickets/{ticket_id}", headers=fan_a.headers)).json()
    public = load_pem_public_key((await api.get("/ticket-key")).text.encode())
    claims = verify(ticket["token"], public)  # type: ignore[arg-type]
    assert str(claims.ticket_id) == ticket_id
    qr = await api.get(f"/tickets/{ticket_id}/qr.svg", headers=fan_a.headers)
    assert qr.headers["content-type"].startswith("image/svg+xml")
    assert qr.text.lstrip().startswith("<?xml") or "<svg" in qr.text
    pdf = await api.get(f"/tickets/{ticket_id}/ticket.pdf", headers=fan_a.headers)
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")

    cancelled = await api.post(f"/orders/{order['id']}/cancel", headers=fan_a.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "refunded"
    assert (await api.get(f"/tickets/{ticket_id}", headers=fan_a.headers)).json()["token"] is None
    assert await session.scalar(text("SELECT count(*) FROM refunds")) == 1
    assert await session.scalar(text("SELECT count(*) FROM inventory_units WHERE state = 'sold'")) == 0
    again = await api.post(f"/orders/{order['id']}/cancel", headers=fan_a.headers)
    assert again.json()["state"] == "refunded"
    assert await session.scalar(text("SELECT count(*) FROM refunds")) == 1


@pytest.mark.parametrize(
    ("card", "status", "failure"),
    [
        (offline.DECLINED, "failed", "card_declined"),
        (offline.INSUFFICIENT_FUNDS, "failed", "insufficient_funds"),
        (offline.TIMEOUT, "pending", None),
        (offline.LATE_SUCCESS, "pending", None),
    ],
)
async def test_each_test_card(
    api: AsyncTestClient[Litestar],
    event: SmallEvent,
    fan_a: SignedIn,
    card: str,
    status: str,
    failure: str | None,
) -> None:
    hold_id = await _hold(api, fan_a, event, event.seat_ids[:1])
    paid = await _pay(api, fan_a, hold_id, card)
    assert (paid["status"], paid["failure_code"]) == (status, failure)
    hold = (await api.get(f"/holds/{hold_id}", headers=fan_a.headers)).json()
    assert hold["state"] == ("failed" if status == "failed" else "paying")


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "offline"},
        {"provider": "offline", "card_number": "1111 2222 3333 4444"},
        {"provider": "bitcoin", "card_number": offline.SUCCESS},
        {"provider": "stripe"},
        {"card_number": offline.SUCCESS},
    ],
)
async def test_bad_checkouts_are_400_and_leave_the_hold_active(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, body: dict[str, object]
) -> None:
    hold_id = await _hold(api, fan_a, event, event.seat_ids[:1])
    response = await api.post(f"/holds/{hold_id}/checkout", json=body, headers=fan_a.headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await api.get(f"/holds/{hold_id}", headers=fan_a.headers)).json()["state"] == "active"


async def test_no_fan_reaches_another_fans_checkout_orders_or_tickets(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, fan_b: SignedIn
) -> None:
    hold_id = await _hold(api, fan_a, event, event.seat_ids[:1])
    stolen = await api.post(
        f"/holds/{hold_id}/checkout",
        json={"provider": "offline", "card_number": offline.SUCCESS},
        headers=fan_b.headers,
    )
    assert stolen.status_code == 404
    paid = await _pay(api, fan_a, hold_id, offline.SUCCESS)
    order = (await api.get(f"/orders/{paid['order_id']}", headers=fan_a.headers)).json()
    ticket_id = order["lines"][0]["ticket_id"]
    for path in (
        f"/orders/{order['id']}",
        f"/tickets/{ticket_id}",
        f"/tickets/{ticket_id}/qr.svg",
        f"/tickets/{ticket_id}/ticket.pdf",
    ):
        assert (await api.get(path, headers=fan_b.headers)).status_code == 404, path
        assert (await api.get(path)).status_code == 401, path
    assert (await api.post(f"/orders/{order['id']}/cancel", headers=fan_b.headers)).status_code == 404
    assert (await api.get("/orders", headers=fan_b.headers)).json()["items"] == []
    assert (await api.get(f"/orders/{order['id']}", headers=fan_a.headers)).json()["state"] == "confirmed"


async def test_cancelling_is_refused_close_to_the_event(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    hold_id = await _hold(api, fan_a, event, event.seat_ids[:1])
    paid = await _pay(api, fan_a, hold_id, offline.SUCCESS)
    await session.execute(
        text("UPDATE events SET starts_at = now() + interval '1 hour' WHERE id = :e"), {"e": event.event_id}
    )
    await session.commit()
    refused = await api.post(f"/orders/{paid['order_id']}/cancel", headers=fan_a.headers)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/cancellation-closed")
