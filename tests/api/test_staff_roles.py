"""Every staff route against {no key, box_office, on_call, gate, admin}, and the audit row
each state-changing staff request leaves.

The table classifies every ``/staff`` route the app serves; a route missing from it fails the
test. Paths name ids that do not exist, so an admitted role meets a 404 (or a 400 for a body
it cannot use) and changes nothing, while a refused one meets 401 or 403 first.
"""

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

BOX, CALL, GATE, ADMIN = StaffRole.BOX_OFFICE, StaffRole.ON_CALL, StaffRole.GATE, StaffRole.ADMIN
EVERYONE = frozenset(StaffRole)

# (method, path template) -> the roles admitted (admin always is), and a request body.
STAFF_MATRIX: dict[tuple[str, str], tuple[frozenset[StaffRole], dict[str, Any] | None]] = {
    ("GET", "/staff/me"): (EVERYONE, None),
    ("GET", "/staff/keys"): (frozenset({ADMIN}), None),
    ("DELETE", "/staff/keys/{name:str}"): (frozenset({ADMIN}), None),
    ("GET", "/staff/audit"): (frozenset({CALL, ADMIN}), None),
    ("GET", "/staff/events"): (frozenset({BOX, ADMIN}), None),
    ("GET", "/staff/events/{event_id:uuid}/seatmap"): (frozenset({BOX, ADMIN}), None),
    ("POST", "/staff/sales"): (
        frozenset({BOX, ADMIN}),
        {"event_id": "00000000-0000-4000-8000-000000000000", "seat_ids": [1]},
    ),
    ("GET", "/staff/sales/{hold_id:uuid}"): (frozenset({BOX, ADMIN}), None),
    ("DELETE", "/staff/sales/{hold_id:uuid}"): (frozenset({BOX, ADMIN}), None),
    ("POST", "/staff/sales/{hold_id:uuid}/payment"): (
        frozenset({BOX, ADMIN}),
        {"method": "cash", "tendered_minor": 10000},
    ),
    ("GET", "/staff/orders/{order_id:uuid}"): (frozenset({BOX, ADMIN}), None),
    ("GET", "/staff/tickets/{ticket_id:uuid}"): (frozenset({BOX, ADMIN}), None),
    ("GET", "/staff/tickets/{ticket_id:uuid}/qr.svg"): (frozenset({BOX, ADMIN}), None),
    ("GET", "/staff/tickets/{ticket_id:uuid}/ticket.pdf"): (frozenset({BOX, ADMIN}), None),
    ("GET", "/staff/dashboard"): (frozenset({CALL, BOX, ADMIN}), None),
    ("GET", "/staff/holds"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/holds/{hold_id:uuid}/release"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/holds/release-expired"): (
        frozenset({CALL, ADMIN}),
        {"event_id": "00000000-0000-4000-8000-000000000000"},
    ),
    ("GET", "/staff/orders/stuck"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/orders/{hold_id:uuid}/reconcile"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/orders/{order_id:uuid}/refund"): (frozenset({CALL, ADMIN}), None),
    ("GET", "/staff/refunds"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/refunds/{refund_id:uuid}/retry"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/events/{event_id:uuid}/pause"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/events/{event_id:uuid}/resume"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/checkin"): (frozenset({GATE, ADMIN}), {"token": "not-a-ticket-code", "gate": "north-1"}),
    ("POST", "/staff/checkin/offline"): (
        frozenset({GATE, ADMIN}),
        {"gate": "north-1", "scans": [{"token": "not-a-ticket-code", "scanned_at": "2026-11-28T19:00:00Z"}]},
    ),
    ("GET", "/staff/checkin/conflicts"): (frozenset({GATE, CALL, ADMIN}), None),
    ("GET", "/staff/queues"): (frozenset({CALL, ADMIN}), None),
    ("GET", "/staff/jobs/failed"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/jobs/{job_id:str}/requeue"): (frozenset({CALL, ADMIN}), None),
    ("DELETE", "/staff/jobs/{job_id:str}"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/jobs/requeue-failed"): (frozenset({CALL, ADMIN}), {"queue": "no-such-queue"}),
    ("GET", "/staff/events/{event_id:uuid}/waiting-room"): (frozenset({CALL, ADMIN}), None),
    ("PUT", "/staff/events/{event_id:uuid}/waiting-room"): (
        frozenset({CALL, ADMIN}),
        {"rate_per_minute": 600},
    ),
    ("POST", "/staff/events/{event_id:uuid}/waiting-room/pause"): (frozenset({CALL, ADMIN}), None),
    ("POST", "/staff/events/{event_id:uuid}/waiting-room/resume"): (frozenset({CALL, ADMIN}), None),
    # Only admin changes (or reads the drafts of) the catalog.
    ("GET", "/staff/catalog/venues"): (frozenset({ADMIN}), None),
    ("GET", "/staff/catalog/events"): (frozenset({ADMIN}), None),
    ("POST", "/staff/catalog/events"): (
        frozenset({ADMIN}),
        {
            "title": "Nobody's Gig",
            "performer": "Nobody",
            "category": "music",
            "venue": "no-such-venue",
            "starts_at": "2031-05-01T19:30:00Z",
            "onsale_starts_at": "2031-04-01T09:00:00Z",
        },
    ),
    ("GET", "/staff/catalog/events/{event_id:uuid}"): (frozenset({ADMIN}), None),
    ("PATCH", "/staff/catalog/events/{event_id:uuid}"): (frozenset({ADMIN}), {"title": "Renamed"}),
    ("PUT", "/staff/catalog/events/{event_id:uuid}/tiers"): (
        frozenset({ADMIN}),
        {"currency": "GBP", "tiers": [{"name": "All", "price_minor": 1000, "sections": ["Stalls"]}]},
    ),
    ("PATCH", "/staff/catalog/events/{event_id:uuid}/prices"): (
        frozenset({ADMIN}),
        {"prices": [{"tier": "All", "price_minor": 900}]},
    ),
    ("POST", "/staff/catalog/events/{event_id:uuid}/on-sale"): (frozenset({ADMIN}), None),
    ("POST", "/staff/catalog/events/{event_id:uuid}/off-sale"): (frozenset({ADMIN}), None),
    ("POST", "/staff/catalog/events/{event_id:uuid}/cancel"): (frozenset({ADMIN}), None),
}


def _fill(template: str) -> str:
    path = template
    for part in ("{name:str}",):
        path = path.replace(part, f"no-such-{uuid.uuid4().hex[:8]}")
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + str(uuid.uuid4()) + path[end + 1 :]
    return path


@pytest.fixture
async def keys(session: AsyncSession) -> dict[StaffRole, str]:
    issued = {
        role: await create_key(session, f"{role.value}-{uuid.uuid4().hex[:6]}", role) for role in StaffRole
    }
    await session.commit()
    return {role: key.secret for role, key in issued.items()}


def staff_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_every_staff_route_is_in_the_matrix(api: AsyncTestClient[Litestar]) -> None:
    served = {
        (method, route.path)
        for route in api.app.routes
        if route.path.startswith("/staff")
        for method in getattr(route, "methods", set())
        if method not in ("OPTIONS", "HEAD")
    }
    assert served == set(STAFF_MATRIX)


@pytest.mark.parametrize(("method", "template"), sorted(STAFF_MATRIX))
async def test_each_role_meets_its_answer(
    api: AsyncTestClient[Litestar], keys: dict[StaffRole, str], method: str, template: str
) -> None:
    admitted, body = STAFF_MATRIX[(method, template)]
    assert ADMIN in admitted
    callers: list[tuple[str, dict[str, str]]] = [("no key", {})]
    callers += [(role.value, staff_headers(secret)) for role, secret in keys.items()]
    callers.append(("a fan token", {"Authorization": "Bearer bofan_not-a-staff-key"}))
    for who, headers in callers:
        response = await api.request(method, _fill(template), json=body, headers=headers)
        assert response.status_code < 500, (who, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
        if who in ("no key", "a fan token"):
            expected: object = 401
        elif StaffRole(who) in admitted:
            expected = "admitted"
        else:
            expected = 403
        if expected == "admitted":
            assert response.status_code not in (401, 403), (who, method, template, response.text)
        else:
            assert response.status_code == expected, (who, method, template, response.text)


async def test_a_revoked_key_stops_working_at_once(
    api: AsyncTestClient[Litestar], session: AsyncSession, keys: dict[StaffRole, str]
) -> None:
    till = await create_key(session, "till-7", BOX)
    await session.commit()
    assert (await api.get("/staff/me", headers=staff_headers(till.secret))).status_code == 200
    revoked = await api.delete("/staff/keys/till-7", headers=staff_headers(keys[ADMIN]))
    assert revoked.status_code == 204, revoked.text
    assert (await api.get("/staff/me", headers=staff_headers(till.secret))).status_code == 401
    again = await api.delete("/staff/keys/till-7", headers=staff_headers(keys[ADMIN]))
    assert again.status_code == 404


async def test_every_staff_action_is_audited_whatever_its_outcome(
    api: AsyncTestClient[Litestar], session: AsyncSession, keys: dict[StaffRole, str]
) -> None:
    await create_key(session, "till-8", BOX)
    await session.commit()
    await api.delete("/staff/keys/till-8")  # no key
    await api.delete("/staff/keys/till-8", headers=staff_headers(keys[BOX]))  # wrong role
    await api.delete("/staff/keys/nobody", headers=staff_headers(keys[ADMIN]))  # unknown
    await api.delete("/staff/keys/till-8", headers=staff_headers(keys[ADMIN]))  # done
    await api.get("/staff/keys", headers=staff_headers(keys[ADMIN]))  # a read: not an action

    entries = list(reversed(await audit.tail(session, limit=10)))
    assert [(e.action, e.outcome, e.target_id) for e in entries] == [
        ("staff_key.revoke", "denied", "till-8"),
        ("staff_key.revoke", "denied", "till-8"),
        ("staff_key.revoke", "failed", "nobody"),
        ("staff_key.revoke", "ok", "till-8"),
    ]
    anonymous, wrong_role, unknown, done = entries
    assert anonymous.actor_name == "(no valid key)"
    assert anonymous.details["status"] == 401
    assert wrong_role.actor_name.startswith("box_office-")
    assert wrong_role.details["problem"].endswith("/forbidden")
    assert unknown.details["problem"].endswith("/staff-key-not-found")
    assert done.actor_name.startswith("admin-")
    assert done.actor_type == "staff"
    assert all(e.target_type == "staff_key" for e in entries)


async def test_the_audit_log_reads_back_over_the_api(
    api: AsyncTestClient[Litestar], keys: dict[StaffRole, str]
) -> None:
    await api.delete("/staff/keys/ghost", headers=staff_headers(keys[ADMIN]))
    listed = await api.get("/staff/audit", params={"limit": 5}, headers=staff_headers(keys[CALL]))
    assert listed.status_code == 200, listed.text
    (entry,) = listed.json()["items"]
    assert entry["action"] == "staff_key.revoke"
    assert entry["outcome"] == "failed"
    later = await api.get("/staff/audit", params={"after_id": entry["id"]}, headers=staff_headers(keys[CALL]))
    assert later.json()["items"] == []


async def test_a_keys_last_use_is_recorded_at_most_once_a_minute(
    api: AsyncTestClient[Litestar], session: AsyncSession
) -> None:
    # Each recording locks the key's row until its request commits; recording once a minute
    # keeps one key's concurrent requests (a busy gate) from queueing behind each other.
    issued = await create_key(session, "gate-3", GATE)
    await session.commit()
    last_used = text("SELECT last_used_at FROM staff_keys WHERE id = :id")
    assert (await session.scalar(last_used, {"id": issued.id})) is None
    assert (await api.get("/staff/me", headers=staff_headers(issued.secret))).status_code == 200
    first = await session.scalar(last_used, {"id": issued.id})
    assert first is not None
    await session.commit()
    assert (await api.get("/staff/me", headers=staff_headers(issued.secret))).status_code == 200
    assert await session.scalar(last_used, {"id": issued.id}) == first
    await session.commit()
    await session.execute(
        text("UPDATE staff_keys SET last_used_at = last_used_at - interval '2 minutes' WHERE id = :id"),
        {"id": issued.id},
    )
    await session.commit()
    assert (await api.get("/staff/me", headers=staff_headers(issued.secret))).status_code == 200
    assert await session.scalar(last_used, {"id": issued.id}) > first
