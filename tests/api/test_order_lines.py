"""Order lines say where each ticket is: the seat's label (section, row, number) and the tier's
name, for fans and staff alike, read in a fixed number of statements however big the order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.orders import service as orders
from booking.payments import offline
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, make_event


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=4)


async def order(api: AsyncTestClient[Litestar], fan: SignedIn, body: dict[str, Any]) -> dict[str, Any]:
    held = await api.post("/holds", json=body, headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex})
    assert held.status_code == 201, held.text
    paid = await api.post(
        f"/holds/{held.json()['id']}/checkout",
        json={"provider": "offline", "card_number": offline.SUCCESS},
        headers=fan.headers,
    )
    assert paid.json()["status"] == "confirmed", paid.text
    shown = await api.get(f"/orders/{paid.json()['order_id']}", headers=fan.headers)
    assert shown.status_code == 200
    return dict(shown.json())


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block."""
    ran: list[str] = []

    def record(*args: Any) -> None:
        ran.append(args[2])

    sa_event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield ran
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_each_line_has_its_seat_label_and_tier_name(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    seated = await order(api, fan_a, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[1:3]})
    lines = seated["lines"]
    assert [(line["seat_id"], line["seat"]) for line in lines] == [
        (event.seat_ids[1], "Stalls, Row A, Seat 2"),
        (event.seat_ids[2], "Stalls, Row A, Seat 3"),
    ]
    assert lines[0]["section"] == "Stalls"
    assert lines[0]["row"] == "A"
    assert lines[0]["number"] == "2"
    assert lines[0]["tier_name"] == "Seated"
    assert lines[0]["tier_id"] == str(event.seat_tier_id)
    # The label is the one the ticket carries.
    ticket = await api.get(f"/tickets/{lines[0]['ticket_id']}", headers=fan_a.headers)
    assert ticket.json()["seat"] == lines[0]["seat"]

    standing = await order(
        api, fan_a, {"event_id": str(event.event_id), "tier_id": str(event.ga_tier_id), "quantity": 2}
    )
    assert [
        (line["seat_id"], line["seat"], line["section"], line["row"], line["number"], line["tier_name"])
        for line in standing["lines"]
    ] == [(None, "Standing", None, None, None, "Standing")] * 2

    listed = (await api.get("/orders", headers=fan_a.headers)).json()["items"]
    assert [item["id"] for item in listed] == [standing["id"], seated["id"]]
    assert [item["lines"] for item in listed] == [standing["lines"], seated["lines"]]

    # On-call's refund answers the order with the same lines (one renderer for everyone).
    on_call = await create_key(session, f"on-call-{uuid.uuid4().hex[:6]}", StaffRole.ON_CALL)
    await session.commit()
    refunded = await api.post(
        f"/staff/orders/{seated['id']}/refund", headers={"Authorization": f"Bearer {on_call.secret}"}
    )
    assert refunded.status_code == 200, refunded.text
    staff_lines = refunded.json()["order"]["lines"]
    assert [{k: v for k, v in line.items() if k != "state"} for line in staff_lines] == [
        {k: v for k, v in line.items() if k != "state"} for line in lines
    ]
    assert {line["state"] for line in staff_lines} == {"refunded"}


async def test_an_order_and_a_fans_orders_are_read_in_two_statements_whatever_their_size(
    api: AsyncTestClient[Litestar],
    event: SmallEvent,
    fan_a: SignedIn,
    engine: AsyncEngine,
    session: AsyncSession,
) -> None:
    small = await order(api, fan_a, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]})
    big = await order(api, fan_a, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[1:6]})
    await order(
        api, fan_a, {"event_id": str(event.event_id), "tier_id": str(event.ga_tier_id), "quantity": 2}
    )

    for shown, size in ((small, 1), (big, 5)):
        with statements(engine) as ran:
            view = await orders.get_order(session, uuid.UUID(shown["id"]), fan_id=fan_a.fan_id)
        assert len(view.lines) == size
        assert len(ran) == 2, ran
    with statements(engine) as ran:
        views = await orders.list_orders(session, fan_id=fan_a.fan_id)
    assert [len(view.lines) for view in views] == [2, 5, 1]
    assert len(ran) == 2, ran
    with statements(engine) as ran:
        assert await orders.list_orders(session, fan_id=uuid.uuid4()) == []
    assert len(ran) == 1
