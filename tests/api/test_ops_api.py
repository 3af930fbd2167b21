"""On-call operations over HTTP with real staff keys: each route's answer and its refusals,
what fans see change (holds refused while a sale is paused), and the audit rows left."""

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
from booking.holds.policy import HoldPolicy
from booking.ops import audit
from booking.payments import offline
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, advance_clock, make_event

POLICY = HoldPolicy()


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=5)


@pytest.fixture
async def staff(session: AsyncSession) -> dict[StaffRole, dict[str, str]]:
    """Headers carrying a live key of each role."""
    issued = {role: await create_key(session, f"{role.value}-ops", role) for role in StaffRole}
    await session.commit()
    return {role: {"Authorization": f"Bearer {key.secret}"} for role, key in issued.items()}


def problem(response: Any) -> tuple[int, str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.status_code, str(response.json()["type"]).rsplit("/", 1)[-1]


async def fan_hold(api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent, seats: list[int]) -> Any:
    return await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": seats},
        headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
    )


async def held(api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent, seats: list[int]) -> str:
    response = await fan_hold(api, fan, event, seats)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def pay(api: AsyncTestClient[Litestar], fan: SignedIn, hold_id: str, card: str) -> dict[str, Any]:
    response = await api.post(
        f"/holds/{hold_id}/checkout", json={"provider": "offline", "card_number": card}, headers=fan.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def last_audit(session: AsyncSession) -> audit.AuditView:
    (entry,) = await audit.tail(session, limit=1)
    await session.commit()
    return entry


async def test_the_dashboard_shows_a_hold_a_fan_just_made(
    api: AsyncTestClient[Litestar],
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    event: SmallEvent,
) -> None:
    await held(api, fan_a, event, event.seat_ids[:2])
    response = await api.get("/staff/dashboard", headers=staff[StaffRole.BOX_OFFICE])
    assert response.status_code == 200, response.text
    board = response.json()
    (row,) = [e for e in board["events"] if e["event_id"] == str(event.event_id)]
    assert (row["capacity"], row["available"], row["held"], row["sold"]) == (15, 13, 2, 0)
    assert (row["holds_last_minute"], row["holds_per_minute_5m"]) == (1, 0.2)
    assert (row["orders_last_minute"], row["revenue"]) == (0, [])
    assert row["status"] == "on_sale"
    assert (board["expiring_soon"], board["stuck_paying"]) == (0, 0)
    assert (await api.get("/staff/dashboard", headers=staff[StaffRole.GATE])).status_code == 403


async def test_find_holds_by_fan_event_id_state_and_expiry(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    fan_b: SignedIn,
    event: SmallEvent,
) -> None:
    first = await held(api, fan_a, event, event.seat_ids[:2])
    second = await held(api, fan_b, event, event.seat_ids[2:3])
    headers = staff[StaffRole.ON_CALL]

    async def listed(**params: Any) -> list[dict[str, Any]]:
        response = await api.get("/staff/holds", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    assert [h["id"] for h in await listed()] == [second, first]
    (mine,) = await listed(fan_email=fan_a.email.upper())
    assert (mine["id"], mine["owner_kind"], mine["owner"]) == (first, "fan", fan_a.email)
    assert (mine["quantity"], mine["total"], mine["state"]) == (
        2,
        {"amount_minor": 10000, "currency": "GBP"},
        "active",
    )
    assert mine["event_title"] == "Test Night"
    assert 0 < mine["seconds_left"] <= POLICY.ttl.total_seconds()
    assert [h["id"] for h in await listed(hold_id=second)] == [second]
    assert len(await listed(event_id=str(event.event_id), limit=1)) == 1
    assert await listed(expired="true") == []
    assert await listed(state="released") == []

    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    expired = await listed(expired="true")
    assert {h["id"] for h in expired} == {first, second}
    assert all(h["overdue"] and h["seconds_left"] == 0 for h in expired)

    for bad in (
        {"limit": 0},
        {"limit": 501},
        {"state": "lost"},
        {"event_id": "nope"},
        {"fan_email": "a\x00b"},
    ):
        response = await api.get("/staff/holds", params=bad, headers=headers)
        assert problem(response) == (400, "invalid-request"), bad


async def test_staff_release_a_fans_hold_with_its_refusals_audited(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    event: SmallEvent,
) -> None:
    hold_id = await held(api, fan_a, event, event.seat_ids[:2])
    # A till may not reach fans' holds (nor other tills' sales): releasing anyone's is on call.
    till = await api.post(f"/staff/holds/{hold_id}/release", headers=staff[StaffRole.BOX_OFFICE])
    assert problem(till) == (403, "forbidden")
    headers = staff[StaffRole.ON_CALL]
    released = await api.post(f"/staff/holds/{hold_id}/release", headers=headers)
    assert released.status_code == 200, released.text
    assert released.json()["state"] == "released"
    fan_view = await api.get(f"/holds/{hold_id}", headers=fan_a.headers)
    assert fan_view.json()["state"] == "released"
    entry = await last_audit(session)
    assert (entry.action, entry.outcome, entry.target_type, entry.target_id) == (
        "hold.release",
        "ok",
        "hold",
        hold_id,
    )
    assert entry.actor_name == "on_call-ops"
    assert entry.details["quantity"] == 2

    again = await api.post(f"/staff/holds/{hold_id}/release", headers=headers)
    assert problem(again) == (409, "hold-already-ended")
    entry = await last_audit(session)
    assert (entry.outcome, entry.details["problem"].rsplit("/", 1)[-1]) == ("failed", "hold-already-ended")

    paying = await held(api, fan_a, event, event.seat_ids[2:3])
    assert (await pay(api, fan_a, paying, offline.LATE_SUCCESS))["status"] == "pending"
    assert problem(await api.post(f"/staff/holds/{paying}/release", headers=headers)) == (
        409,
        "hold-being-paid",
    )
    missing = await api.post(f"/staff/holds/{uuid.uuid4()}/release", headers=headers)
    assert problem(missing) == (404, "hold-not-found")
    denied = await api.post(f"/staff/holds/{paying}/release", headers=staff[StaffRole.GATE])
    assert problem(denied) == (403, "forbidden")


async def test_release_expired_of_one_event_or_all(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    fan_b: SignedIn,
    event: SmallEvent,
) -> None:
    other = await make_event(session, seats=2, ga_capacity=1)
    await held(api, fan_a, event, event.seat_ids[:1])
    await held(api, fan_b, other, other.seat_ids[:1])
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    headers = staff[StaffRole.ON_CALL]

    one = await api.post(
        "/staff/holds/release-expired", json={"event_id": str(event.event_id)}, headers=headers
    )
    assert one.status_code == 200, one.text
    assert one.json() == {"event_id": str(event.event_id), "released": 1}
    entry = await last_audit(session)
    assert (entry.action, entry.target_type, entry.target_id, entry.details["released"]) == (
        "hold.release_expired",
        "event",
        str(event.event_id),
        1,
    )
    everywhere = await api.post("/staff/holds/release-expired", headers=headers)
    assert everywhere.json() == {"event_id": None, "released": 1}
    assert (await api.post("/staff/holds/release-expired", json={}, headers=headers)).json()["released"] == 0

    unknown = await api.post(
        "/staff/holds/release-expired", json={"event_id": str(uuid.uuid4())}, headers=headers
    )
    assert problem(unknown) == (404, "event-not-found")
    bad = await api.post("/staff/holds/release-expired", json={"event": "x"}, headers=headers)
    assert problem(bad) == (400, "invalid-request")
    box_office = await api.post("/staff/holds/release-expired", json={}, headers=staff[StaffRole.BOX_OFFICE])
    assert problem(box_office) == (403, "forbidden")


async def test_a_stuck_payment_is_listed_and_reconciled(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    event: SmallEvent,
) -> None:
    headers = staff[StaffRole.ON_CALL]
    hold_id = await held(api, fan_a, event, event.seat_ids[:1])
    assert (await pay(api, fan_a, hold_id, offline.LATE_SUCCESS))["status"] == "pending"
    assert (await api.get("/staff/orders/stuck", headers=headers)).json() == {"items": []}
    await advance_clock(session, POLICY.payment_grace.total_seconds() + 1)

    listed = await api.get("/staff/orders/stuck", headers=headers)
    assert listed.status_code == 200, listed.text
    (stuck,) = listed.json()["items"]
    assert (stuck["hold_id"], stuck["buyer"], stuck["provider"], stuck["payment_state"]) == (
        hold_id,
        fan_a.email,
        "offline",
        "pending",
    )
    assert stuck["overdue"]
    assert stuck["amount"] == {"amount_minor": 5000, "currency": "GBP"}

    settled = await api.post(f"/staff/orders/{hold_id}/reconcile", headers=headers)
    assert settled.status_code == 200, settled.text
    body = settled.json()
    assert (body["hold_id"], body["status"], body["provider"]) == (hold_id, "confirmed", "offline")
    order = await api.get(f"/orders/{body['order_id']}", headers=fan_a.headers)
    assert order.json()["state"] == "confirmed"
    entry = await last_audit(session)
    assert (entry.action, entry.outcome, entry.target_id, entry.details["result"]) == (
        "order.reconcile",
        "ok",
        hold_id,
        "confirmed",
    )
    assert (await api.get("/staff/orders/stuck", params={"older_than": 0}, headers=headers)).json()[
        "items"
    ] == []

    again = await api.post(f"/staff/orders/{hold_id}/reconcile", headers=headers)
    assert problem(again) == (409, "nothing-to-reconcile")
    missing = await api.post(f"/staff/orders/{uuid.uuid4()}/reconcile", headers=headers)
    assert problem(missing) == (404, "hold-not-found")
    assert problem(await api.get("/staff/orders/stuck", params={"older_than": -1}, headers=headers)) == (
        400,
        "invalid-request",
    )
    box_office = await api.post(f"/staff/orders/{hold_id}/reconcile", headers=staff[StaffRole.BOX_OFFICE])
    assert problem(box_office) == (403, "forbidden")


async def test_staff_refund_an_order_once(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    event: SmallEvent,
) -> None:
    headers = staff[StaffRole.ON_CALL]
    hold_id = await held(api, fan_a, event, event.seat_ids[:2])
    order_id = (await pay(api, fan_a, hold_id, offline.SUCCESS))["order_id"]

    refunded = await api.post(f"/staff/orders/{order_id}/refund", headers=headers)
    assert refunded.status_code == 200, refunded.text
    body = refunded.json()
    assert (body["order"]["id"], body["order"]["state"], body["refund_recorded"]) == (
        order_id,
        "refunded",
        True,
    )
    assert (await api.get(f"/orders/{order_id}", headers=fan_a.headers)).json()["state"] == "refunded"
    assert await session.scalar(text("SELECT count(*) FROM refunds")) == 1
    await session.commit()
    entry = await last_audit(session)
    assert (entry.action, entry.target_type, entry.target_id) == ("order.refund", "order", order_id)
    assert (entry.details["amount_minor"], entry.details["currency"]) == (10000, "GBP")

    again = await api.post(f"/staff/orders/{order_id}/refund", headers=headers)
    assert problem(again) == (409, "order-not-refundable")
    missing = await api.post(f"/staff/orders/{uuid.uuid4()}/refund", headers=headers)
    assert problem(missing) == (404, "order-not-found")
    assert await session.scalar(text("SELECT count(*) FROM refunds")) == 1
    await session.commit()


async def test_pause_stops_fans_holding_and_resume_lets_them_again(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    fan_b: SignedIn,
    event: SmallEvent,
) -> None:
    headers = staff[StaffRole.ON_CALL]
    before = await held(api, fan_a, event, event.seat_ids[:1])

    paused = await api.post(f"/staff/events/{event.event_id}/pause", headers=headers)
    assert paused.status_code == 200, paused.text
    assert paused.json() == {
        "event_id": str(event.event_id),
        "title": "Test Night",
        "previous": "on_sale",
        "status": "paused",
    }
    assert problem(await fan_hold(api, fan_b, event, event.seat_ids[1:2])) == (409, "sale-not-open")
    # A hold made before the pause may still be paid for.
    assert (await pay(api, fan_a, before, offline.SUCCESS))["status"] == "confirmed"
    assert problem(await api.post(f"/staff/events/{event.event_id}/pause", headers=headers)) == (
        409,
        "sale-state-conflict",
    )
    entry = await last_audit(session)
    assert (entry.action, entry.outcome) == ("sale.pause", "failed")

    resumed = await api.post(f"/staff/events/{event.event_id}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "on_sale"
    assert (await fan_hold(api, fan_b, event, event.seat_ids[1:2])).status_code == 201
    assert problem(await api.post(f"/staff/events/{event.event_id}/resume", headers=headers)) == (
        409,
        "sale-state-conflict",
    )
    actions = [(e.action, e.outcome, e.target_id) for e in reversed(await audit.tail(session, limit=4))]
    await session.commit()
    assert actions == [
        ("sale.pause", "ok", str(event.event_id)),
        ("sale.pause", "failed", str(event.event_id)),
        ("sale.resume", "ok", str(event.event_id)),
        ("sale.resume", "failed", str(event.event_id)),
    ]
    missing = await api.post(f"/staff/events/{uuid.uuid4()}/pause", headers=headers)
    assert problem(missing) == (404, "event-not-found")
    denied = await api.post(f"/staff/events/{event.event_id}/pause", headers=staff[StaffRole.BOX_OFFICE])
    assert problem(denied) == (403, "forbidden")


async def test_refunds_waiting_are_listed_counted_on_the_dashboard_and_a_failed_one_retried(
    api: AsyncTestClient[Litestar],
    session: AsyncSession,
    staff: dict[StaffRole, dict[str, str]],
    fan_a: SignedIn,
    event: SmallEvent,
) -> None:
    headers = staff[StaffRole.ON_CALL]
    hold_id = await held(api, fan_a, event, event.seat_ids[:2])
    order_id = (await pay(api, fan_a, hold_id, offline.SUCCESS))["order_id"]
    assert (await api.post(f"/staff/orders/{order_id}/refund", headers=headers)).status_code == 200
    await session.execute(
        text("UPDATE refunds SET state = 'failed', attempts = 8, last_error = 'card closed'")
    )
    await session.commit()

    board = await api.get("/staff/dashboard", headers=headers)
    assert board.json()["refunds"] == {"pending": 0, "submitted": 0, "failed": 1}
    listed = await api.get("/staff/refunds", params={"state": "failed"}, headers=headers)
    assert listed.status_code == 200, listed.text
    (row,) = listed.json()["items"]
    assert (row["order_id"], row["state"], row["last_error"], row["amount"]["amount_minor"]) == (
        order_id,
        "failed",
        "card closed",
        10000,
    )
    assert (await api.get("/staff/refunds", headers=staff[StaffRole.GATE])).status_code == 403

    retried = await api.post(f"/staff/refunds/{row['id']}/retry", headers=headers)
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"id": row["id"], "state": "pending"}
    entry = await last_audit(session)
    assert (entry.action, entry.target_type, entry.target_id) == ("refund.retry", "refund", row["id"])
    assert problem(await api.post(f"/staff/refunds/{row['id']}/retry", headers=headers)) == (
        409,
        "refund-not-failed",
    )
    assert problem(await api.post(f"/staff/refunds/{uuid.uuid4()}/retry", headers=headers)) == (
        404,
        "refund-not-found",
    )
    assert (await api.get("/staff/dashboard", headers=headers)).json()["refunds"]["pending"] == 1
