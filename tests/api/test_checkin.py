"""Gate check-in over HTTP with staff keys: tickets bought through the fan API with the
offline provider are scanned online, refused when refunded, forged, altered or for another
event, and uploaded after working offline, where a repeat is harmless and a conflict is
reported and listed. Bad bodies are 400 and change nothing; every action is audited."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.ops import audit
from booking.payments import offline
from booking.tickets.models import Ticket, TicketScan
from booking.tickets.signing import sign_ticket
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, make_event

PROBLEMS = "https://boxoffice.dev/problems/"


@dataclass(frozen=True)
class Bought:
    order_id: str
    ticket_ids: list[str]
    tokens: list[str]


@dataclass(frozen=True)
class Staff:
    gate: dict[str, str]
    on_call: dict[str, str]
    box_office: dict[str, str]


@pytest.fixture
async def staff(session: AsyncSession) -> Staff:
    tag = uuid.uuid4().hex[:6]
    issued = {
        role: await create_key(session, f"{role.value}-{tag}", role)
        for role in (StaffRole.GATE, StaffRole.ON_CALL, StaffRole.BOX_OFFICE)
    }
    await session.commit()
    headers = {role: {"Authorization": f"Bearer {key.secret}"} for role, key in issued.items()}
    return Staff(headers[StaffRole.GATE], headers[StaffRole.ON_CALL], headers[StaffRole.BOX_OFFICE])


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=2)


@pytest.fixture
async def other_event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=2, ga_capacity=1)


async def buy(api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent, seats: list[int]) -> Bought:
    """Hold, pay with the offline provider's good card, read the tickets' codes."""
    held = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": seats},
        headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert held.status_code == 201, held.text
    paid = await api.post(
        f"/holds/{held.json()['id']}/checkout",
        json={"provider": "offline", "card_number": offline.SUCCESS},
        headers=fan.headers,
    )
    assert paid.json()["status"] == "confirmed", paid.text
    order = (await api.get(f"/orders/{paid.json()['order_id']}", headers=fan.headers)).json()
    ticket_ids = [line["ticket_id"] for line in order["lines"]]
    tokens = [(await api.get(f"/tickets/{t}", headers=fan.headers)).json()["token"] for t in ticket_ids]
    return Bought(order["id"], ticket_ids, tokens)


async def scan(
    api: AsyncTestClient[Litestar], staff: Staff, token: str, gate: str, **extra: Any
) -> dict[str, Any]:
    response = await api.post(
        "/staff/checkin", json={"token": token, "gate": gate, **extra}, headers=staff.gate
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def upload(
    api: AsyncTestClient[Litestar], staff: Staff, gate: str, scans: list[tuple[str, dt.datetime]]
) -> dict[str, Any]:
    body = {"gate": gate, "scans": [{"token": t, "scanned_at": at.isoformat()} for t, at in scans]}
    response = await api.post("/staff/checkin/offline", json=body, headers=staff.gate)
    assert response.status_code == 200, response.text
    return dict(response.json())


def at(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value is not None else None


async def checked_in(session: AsyncSession, ticket_id: str) -> tuple[dt.datetime | None, str | None]:
    row = (
        await session.execute(
            select(Ticket.checked_in_at, Ticket.checked_in_gate).where(Ticket.id == uuid.UUID(ticket_id))
        )
    ).one()
    return row.checked_in_at, row.checked_in_gate


async def scan_rows(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(TicketScan)) or 0)


def minutes_ago(minutes: float) -> dt.datetime:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)).replace(microsecond=0)


# --- Online ---------------------------------------------------------------------------------


async def test_first_scan_admits_and_the_next_is_told_when_and_where(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    first = await scan(api, staff, bought.tokens[0], "north-1")
    assert first["result"] == "admitted"
    assert first["ticket_id"] == bought.ticket_ids[0]
    assert first["order_id"] == bought.order_id
    assert first["event_id"] == str(event.event_id)
    assert first["seat"] == "Stalls, Row A, Seat 1"
    assert first["gate"] == "north-1"
    assert first["revoked_at"] is None
    admitted_at = at(first["admitted_at"])
    assert admitted_at is not None
    assert abs(dt.datetime.now(dt.UTC) - admitted_at) < dt.timedelta(minutes=1)

    second = await scan(api, staff, bought.tokens[0], "south-2")
    assert second["result"] == "already_admitted"
    assert (at(second["admitted_at"]), second["gate"]) == (admitted_at, "north-1")
    assert await checked_in(session, bought.ticket_ids[0]) == (admitted_at, "north-1")
    rows = (
        await session.execute(
            select(TicketScan.gate, TicketScan.result, TicketScan.mode).order_by(TicketScan.id)
        )
    ).all()
    assert [(g, r.value, m.value) for g, r, m in rows] == [
        ("north-1", "admitted", "online"),
        ("south-2", "already_admitted", "online"),
    ]


async def test_a_refunded_ticket_is_revoked_and_not_admitted(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    cancelled = await api.post(f"/orders/{bought.order_id}/cancel", headers=fan_a.headers)
    assert cancelled.json()["state"] == "refunded", cancelled.text
    answer = await scan(api, staff, bought.tokens[0], "north-1")
    assert answer["result"] == "revoked"
    assert answer["revoked_at"] is not None
    assert (answer["admitted_at"], answer["gate"]) == (None, None)
    assert await checked_in(session, bought.ticket_ids[0]) == (None, None)


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def altered_seat(token: str) -> str:
    """A genuine code whose payload was re-encoded with a better seat; signature kept."""
    kid, payload, signature = _segments(token)
    fields = msgspec.msgpack.decode(_unb64(payload))
    fields[4] = "Royal Box, Seat 1"
    return ".".join([kid, _b64(msgspec.msgpack.encode(fields)), signature])


def resigned_under_our_key_id(token: str) -> str:
    """Our key id and payload, signed by a forger's key."""
    kid, payload, _ = _segments(token)
    forged = Ed25519PrivateKey.generate().sign(f"{kid}.{payload}".encode())
    return ".".join([kid, payload, _b64(forged)])


def forged_with_own_key(token: str) -> str:
    """A well-formed code for the same ticket, made with a key that is not ours."""
    _, payload, _ = _segments(token)
    fields = msgspec.msgpack.decode(_unb64(payload))
    return sign_ticket(
        Ed25519PrivateKey.generate(),
        ticket_id=uuid.UUID(bytes=fields[1]),
        order_id=uuid.UUID(bytes=fields[2]),
        event_id=uuid.UUID(bytes=fields[3]),
        seat=fields[4],
        issued_at=dt.datetime.fromtimestamp(fields[5], dt.UTC),
    )


@pytest.mark.parametrize(
    ("forge", "status", "code"),
    [
        (altered_seat, 422, "ticket-signature-invalid"),
        (resigned_under_our_key_id, 422, "ticket-signature-invalid"),
        (forged_with_own_key, 422, "ticket-key-unknown"),
        (lambda token: token[:-10], 400, "ticket-token-malformed"),
        (lambda token: "hello.world", 400, "ticket-token-malformed"),
    ],
    ids=["altered", "resigned", "foreign-key", "truncated", "garbage"],
)
async def test_a_code_that_is_not_genuine_is_a_problem_and_admits_nothing(
    api: AsyncTestClient[Litestar],
    staff: Staff,
    event: SmallEvent,
    fan_a: SignedIn,
    session: AsyncSession,
    forge: Callable[[str], str],
    status: int,
    code: str,
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    forged = forge(bought.tokens[0])
    assert forged != bought.tokens[0]
    response = await api.post("/staff/checkin", json={"token": forged, "gate": "north-1"}, headers=staff.gate)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEMS + code
    assert await checked_in(session, bought.ticket_ids[0]) == (None, None)
    assert await scan_rows(session) == 0
    # The genuine code still gets in.
    assert (await scan(api, staff, bought.tokens[0], "north-1"))["result"] == "admitted"


async def test_a_gate_for_one_event_refuses_another_events_ticket(
    api: AsyncTestClient[Litestar],
    staff: Staff,
    event: SmallEvent,
    other_event: SmallEvent,
    fan_a: SignedIn,
    session: AsyncSession,
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    wrong = await scan(api, staff, bought.tokens[0], "north-1", event_id=str(other_event.event_id))
    assert wrong["result"] == "wrong_event"
    assert wrong["event_id"] == str(event.event_id)
    assert await checked_in(session, bought.ticket_ids[0]) == (None, None)
    right = await scan(api, staff, bought.tokens[0], "north-1", event_id=str(event.event_id))
    assert right["result"] == "admitted"
    # Admitted or not, a ticket for another event stays wrong at this gate.
    again = await scan(api, staff, bought.tokens[0], "north-1", event_id=str(other_event.event_id))
    assert again["result"] == "wrong_event"


async def test_a_retried_scan_with_an_idempotency_key_is_answered_once(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    headers = {**staff.gate, "Idempotency-Key": uuid.uuid4().hex}
    body = {"token": bought.tokens[0], "gate": "north-1"}
    first = await api.post("/staff/checkin", json=body, headers=headers)
    again = await api.post("/staff/checkin", json=body, headers=headers)
    assert first.json()["result"] == again.json()["result"] == "admitted"
    assert again.headers["idempotent-replayed"] == "true"
    assert await scan_rows(session) == 1


# --- Offline --------------------------------------------------------------------------------


async def test_an_offline_upload_admits_at_the_device_time_and_a_repeat_changes_nothing(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:2])
    t0, t1 = minutes_ago(20), minutes_ago(19)
    scans = [(bought.tokens[0], t0), (bought.tokens[1], t1)]
    first = await upload(api, staff, "west-3", scans)
    assert [s["result"] for s in first["scans"]] == ["admitted", "admitted"]
    assert [at(s["admitted_at"]) for s in first["scans"]] == [t0, t1]
    assert [s["admitted_gate"] for s in first["scans"]] == ["west-3", "west-3"]
    assert [s["replayed"] for s in first["scans"]] == [False, False]
    assert first["conflicts"] == []
    assert await checked_in(session, bought.ticket_ids[0]) == (t0, "west-3")
    assert await scan_rows(session) == 2

    repeat = await upload(api, staff, "west-3", scans)
    assert [s["result"] for s in repeat["scans"]] == ["admitted", "admitted"]
    assert [s["replayed"] for s in repeat["scans"]] == [True, True]
    assert [s["scan_id"] for s in repeat["scans"]] == [s["scan_id"] for s in first["scans"]]
    assert [at(s["admitted_at"]) for s in repeat["scans"]] == [t0, t1]
    assert await scan_rows(session) == 2
    assert await checked_in(session, bought.ticket_ids[0]) == (t0, "west-3")

    # Online, the gate that comes later hears about the offline admission.
    online = await scan(api, staff, bought.tokens[1], "north-1")
    assert (online["result"], at(online["admitted_at"]), online["gate"]) == ("already_admitted", t1, "west-3")


async def test_a_conflicting_offline_scan_is_reported_with_both_sides_and_listed(
    api: AsyncTestClient[Litestar],
    staff: Staff,
    event: SmallEvent,
    other_event: SmallEvent,
    fan_a: SignedIn,
    session: AsyncSession,
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    t0, later = minutes_ago(30), minutes_ago(25)
    await upload(api, staff, "west-3", [(bought.tokens[0], t0)])
    clash = await upload(api, staff, "east-4", [(bought.tokens[0], later)])
    (reported,) = clash["scans"]
    assert reported["result"] == "conflict"
    assert (at(reported["admitted_at"]), reported["admitted_gate"]) == (t0, "west-3")
    assert at(reported["scanned_at"]) == later
    assert clash["conflicts"] == [reported]
    # The first admission stands: nothing is merged.
    assert await checked_in(session, bought.ticket_ids[0]) == (t0, "west-3")
    # Uploading the conflict again reports it again, once.
    assert (await upload(api, staff, "east-4", [(bought.tokens[0], later)]))["scans"][0]["replayed"] is True

    for headers in (staff.on_call, staff.gate):
        listed = await api.get(
            "/staff/checkin/conflicts", params={"event_id": str(event.event_id)}, headers=headers
        )
        assert listed.status_code == 200, listed.text
        (conflict,) = listed.json()["items"]
        assert conflict["result"] == "conflict"
        assert conflict["ticket_id"] == bought.ticket_ids[0]
        assert conflict["seat"] == "Stalls, Row A, Seat 1"
        assert (conflict["gate"], at(conflict["scanned_at"]), at(conflict["device_scanned_at"])) == (
            "east-4",
            later,
            later,
        )
        assert (at(conflict["admitted_at"]), conflict["admitted_gate"]) == (t0, "west-3")
        assert conflict["scan_id"] == reported["scan_id"]
    elsewhere = await api.get(
        "/staff/checkin/conflicts", params={"event_id": str(other_event.event_id)}, headers=staff.on_call
    )
    assert elsewhere.json()["items"] == []
    refused = await api.get("/staff/checkin/conflicts", headers=staff.box_office)
    assert refused.status_code == 403


async def test_an_upload_takes_each_tickets_scans_in_time_order(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    early, late = minutes_ago(10), minutes_ago(5)
    # Listed late first: the earlier scan is still the one that admitted.
    answer = await upload(api, staff, "west-3", [(bought.tokens[0], late), (bought.tokens[0], early)])
    assert [s["result"] for s in answer["scans"]] == ["conflict", "admitted"]
    assert at(answer["scans"][0]["admitted_at"]) == early
    assert await checked_in(session, bought.ticket_ids[0]) == (early, "west-3")


async def test_a_device_clock_running_fast_never_dates_an_admission_in_the_future(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    first = await upload(api, staff, "west-3", [(bought.tokens[0], ahead)])
    (admitted,) = first["scans"]
    assert admitted["result"] == "admitted"
    admitted_at = at(admitted["admitted_at"])
    assert admitted_at is not None
    assert admitted_at <= dt.datetime.now(dt.UTC)
    assert at(admitted["scanned_at"]) == ahead
    # The device's own time identifies the scan, so the clamped one is still recognised.
    again = await upload(api, staff, "west-3", [(bought.tokens[0], ahead)])
    assert again["scans"][0]["replayed"] is True
    assert again["scans"][0]["result"] == "admitted"
    assert await scan_rows(session) == 1


async def test_an_offline_scan_of_a_revoked_ticket_is_a_reported_conflict(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    await api.post(f"/orders/{bought.order_id}/cancel", headers=fan_a.headers)
    answer = await upload(api, staff, "west-3", [(bought.tokens[0], dt.datetime.now(dt.UTC))])
    (reported,) = answer["scans"]
    assert reported["result"] == "revoked"
    assert reported["revoked_at"] is not None
    assert answer["conflicts"] == [reported]
    assert await checked_in(session, bought.ticket_ids[0]) == (None, None)
    listed = (await api.get("/staff/checkin/conflicts", headers=staff.on_call)).json()["items"]
    assert [(c["result"], c["ticket_id"]) for c in listed] == [("revoked", bought.ticket_ids[0])]
    details = await session.scalar(select(TicketScan.details))
    assert details is not None
    assert details["revoked_before_scan"] is True


async def test_codes_that_are_not_genuine_are_reported_per_scan_and_not_recorded(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    now = dt.datetime.now(dt.UTC)
    answer = await upload(
        api,
        staff,
        "west-3",
        [("garbage", now), (altered_seat(bought.tokens[0]), now), (bought.tokens[0], now)],
    )
    assert [(s["result"], s["problem"]) for s in answer["scans"]] == [
        ("invalid", "ticket-token-malformed"),
        ("invalid", "ticket-signature-invalid"),
        ("admitted", None),
    ]
    assert [s["index"] for s in answer["scans"]] == [0, 1, 2]
    assert answer["conflicts"] == []
    assert await scan_rows(session) == 1


# --- Bad input ------------------------------------------------------------------------------

Body = Callable[[str], object]
LONG_UPLOAD = 1001


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/staff/checkin", lambda t: {}),
        ("/staff/checkin", lambda t: {"token": t}),
        ("/staff/checkin", lambda t: {"token": t, "gate": ""}),
        ("/staff/checkin", lambda t: {"token": t, "gate": "   "}),
        ("/staff/checkin", lambda t: {"token": t, "gate": "g" * 121}),
        ("/staff/checkin", lambda t: {"token": t, "gate": "north\x00"}),
        ("/staff/checkin", lambda t: {"token": t, "gate": "north-1", "event_id": "the big one"}),
        ("/staff/checkin", lambda t: {"token": t, "gate": "north-1", "admit": True}),
        ("/staff/checkin", lambda t: {"token": 42, "gate": "north-1"}),
        ("/staff/checkin", lambda t: [t, "north-1"]),
        ("/staff/checkin/offline", lambda t: {"gate": "west-3"}),
        ("/staff/checkin/offline", lambda t: {"scans": [{"token": t, "scanned_at": "2026-11-28T19:00:00Z"}]}),
        ("/staff/checkin/offline", lambda t: {"gate": "west-3", "scans": [{"token": t}]}),
        (
            "/staff/checkin/offline",
            lambda t: {"gate": "west-3", "scans": [{"token": t, "scanned_at": "2026-11-28T19:00:00"}]},
        ),
        (
            "/staff/checkin/offline",
            lambda t: {"gate": "west-3", "scans": [{"token": t, "scanned_at": "yesterday"}]},
        ),
        (
            "/staff/checkin/offline",
            lambda t: {"gate": "west-3", "scans": [{"token": t, "scanned_at": "1999-12-31T23:59:59Z"}]},
        ),
        (
            "/staff/checkin/offline",
            lambda t: {"gate": "west-3", "scans": [{"token": t, "scanned_at": "0001-01-01T00:00:00+01:00"}]},
        ),
        (
            "/staff/checkin/offline",
            # A good scan first: the bad one after it still stops the whole upload.
            lambda t: {
                "gate": "west-3",
                "scans": [
                    {"token": t, "scanned_at": "2026-11-28T19:00:00Z"},
                    {"token": t, "scanned_at": "2026-11-28T19:00:00Z", "gate": "east-4"},
                ],
            },
        ),
        (
            "/staff/checkin/offline",
            lambda t: {
                "gate": "west-3",
                "scans": [{"token": t, "scanned_at": "2026-11-28T19:00:00Z"}] * LONG_UPLOAD,
            },
        ),
        ("/staff/checkin/offline", lambda t: {"gate": " ", "scans": []}),
    ],
)
async def test_bad_bodies_are_400_and_change_nothing(
    api: AsyncTestClient[Litestar],
    staff: Staff,
    event: SmallEvent,
    fan_a: SignedIn,
    session: AsyncSession,
    path: str,
    body: Body,
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:1])
    response = await api.post(path, json=body(bought.tokens[0]), headers=staff.gate)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await checked_in(session, bought.ticket_ids[0]) == (None, None)
    assert await scan_rows(session) == 0


async def test_conflict_listing_bounds_are_checked(api: AsyncTestClient[Litestar], staff: Staff) -> None:
    for params in ({"limit": 0}, {"limit": 501}, {"event_id": "the big one"}):
        response = await api.get("/staff/checkin/conflicts", params=params, headers=staff.on_call)
        assert response.status_code == 400, (params, response.text)


# --- Who may, and the record ----------------------------------------------------------------


async def test_only_gate_staff_scan_and_every_scan_is_audited(
    api: AsyncTestClient[Litestar], staff: Staff, event: SmallEvent, fan_a: SignedIn, session: AsyncSession
) -> None:
    bought = await buy(api, fan_a, event, event.seat_ids[:2])
    body = {"token": bought.tokens[0], "gate": "north-1"}
    assert (await api.post("/staff/checkin", json=body)).status_code == 401
    assert (await api.post("/staff/checkin", json=body, headers=fan_a.headers)).status_code == 401
    assert (await api.post("/staff/checkin", json=body, headers=staff.on_call)).status_code == 403
    assert (await api.post("/staff/checkin", json=body, headers=staff.box_office)).status_code == 403
    assert await scan_rows(session) == 0

    await scan(api, staff, bought.tokens[0], "north-1")
    forged = await api.post(
        "/staff/checkin",
        json={"token": altered_seat(bought.tokens[1]), "gate": "north-1"},
        headers=staff.gate,
    )
    assert forged.status_code == 422
    await upload(api, staff, "west-3", [(bought.tokens[1], minutes_ago(3))])

    entries = [
        e
        for e in reversed(await audit.tail(session, limit=20))
        if e.action in ("checkin.scan", "checkin.upload")
    ]
    assert [(e.action, e.outcome) for e in entries] == [
        ("checkin.scan", "denied"),
        ("checkin.scan", "denied"),
        ("checkin.scan", "denied"),
        ("checkin.scan", "denied"),
        ("checkin.scan", "ok"),
        ("checkin.scan", "failed"),
        ("checkin.upload", "ok"),
    ]
    admitted, refused, uploaded = entries[-3:]
    assert (admitted.target_type, admitted.target_id) == ("ticket", bought.ticket_ids[0])
    assert admitted.details["result"] == "admitted"
    assert admitted.details["gate"] == "north-1"
    assert admitted.actor_name.startswith("gate-")
    assert refused.details["problem"] == PROBLEMS + "ticket-signature-invalid"
    assert (uploaded.target_type, uploaded.target_id) == ("gate", "west-3")
    assert uploaded.details["results"] == {"admitted": 1}
    # The scan itself names the key that made it.
    keys = (
        (await session.execute(text("SELECT DISTINCT staff_key_id::text FROM ticket_scans"))).scalars().all()
    )
    assert keys == [admitted.actor_id]
