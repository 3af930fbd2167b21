"""Input PostgreSQL cannot store or compare (NUL characters, integers beyond bigint) is turned
away at the edge with a 400 problem, and changes nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Fan, StaffRole
from booking.accounts.staff import create_key
from booking.holds.models import Hold
from tests.api.conftest import PASSWORD, SignedIn
from tests.factories import SmallEvent, make_event

PROBLEM = "application/problem+json"
NUL = "\x00"


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=4, ga_capacity=2)


def assert_bad_request(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    "body",
    [
        {"email": f"a{NUL}b@example.org", "password": PASSWORD},
        {"email": "nul@example.org", "password": PASSWORD, "display_name": f"x{NUL}"},
        {"email": "nul2@example.org", "password": f"{PASSWORD}{NUL}"},
    ],
)
async def test_registration_with_a_nul_character_is_refused(
    api: AsyncTestClient[Litestar], session: AsyncSession, body: dict[str, str]
) -> None:
    before = await session.scalar(select(func.count()).select_from(Fan))
    assert_bad_request(await api.post("/fans", json=body))
    assert await session.scalar(select(func.count()).select_from(Fan)) == before


async def test_sign_in_with_a_nul_character_is_refused(api: AsyncTestClient[Litestar]) -> None:
    assert_bad_request(
        await api.post("/sessions", json={"email": f"x{NUL}@example.org", "password": PASSWORD})
    )


@pytest.mark.parametrize("param", ["q", "city", "category", "cursor", "date_from"])
async def test_search_with_a_nul_character_is_refused(api: AsyncTestClient[Litestar], param: str) -> None:
    assert_bad_request(await api.get("/events", params={param: f"rock{NUL}"}))


@pytest.mark.parametrize("seat_id", [2**63, -1, 0, 2**64 + 5])
async def test_seat_ids_outside_the_id_range_are_refused(
    api: AsyncTestClient[Litestar], session: AsyncSession, event: SmallEvent, fan_a: SignedIn, seat_id: int
) -> None:
    response = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": [event.seat_ids[0], seat_id]},
        headers={**fan_a.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert_bad_request(response)
    assert await session.scalar(select(func.count()).select_from(Hold)) == 0


async def test_a_card_number_with_a_nul_character_is_refused(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn
) -> None:
    held = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]},
        headers={**fan_a.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert held.status_code == 201, held.text
    response = await api.post(
        f"/holds/{held.json()['id']}/checkout",
        json={"provider": "offline", "card_number": f"4242{NUL}"},
        headers=fan_a.headers,
    )
    assert_bad_request(response)
    again = await api.get(f"/holds/{held.json()['id']}", headers=fan_a.headers)
    assert again.json()["state"] == "active"


async def test_an_idempotency_key_with_a_nul_character_is_refused(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn
) -> None:
    response = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]},
        headers={**fan_a.headers, "Idempotency-Key": f"k{NUL}"},
    )
    assert_bad_request(response)


async def test_malformed_json_is_a_problem(api: AsyncTestClient[Litestar], fan_a: SignedIn) -> None:
    response = await api.post(
        "/holds",
        content=b'{"event_id": ',
        headers={**fan_a.headers, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
    )
    assert_bad_request(response)
    assert response.json()["type"].endswith("/invalid-request")


DEEP_OBJECT = b'{"a":' * 5_000 + b"1" + b"}" * 5_000
DEEP_ARRAY = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize("body", [DEEP_OBJECT, DEEP_ARRAY], ids=["objects", "arrays"])
@pytest.mark.parametrize("path", ["/fans", "/sessions", "/holds"])
async def test_json_nested_too_deeply_is_a_problem_and_changes_nothing(
    api: AsyncTestClient[Litestar], session: AsyncSession, fan_a: SignedIn, path: str, body: bytes
) -> None:
    before = (
        await session.scalar(select(func.count()).select_from(Fan)),
        await session.scalar(select(func.count()).select_from(Hold)),
    )
    response = await api.post(
        path,
        content=body,
        headers={**fan_a.headers, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
    )
    assert_bad_request(response)
    assert response.json()["type"].endswith("/invalid-request")
    await session.rollback()
    after = (
        await session.scalar(select(func.count()).select_from(Fan)),
        await session.scalar(select(func.count()).select_from(Hold)),
    )
    assert after == before


async def test_a_long_query_string_under_an_idempotency_key_is_not_a_server_error(
    api: AsyncTestClient[Litestar], event: SmallEvent, fan_a: SignedIn
) -> None:
    response = await api.post(
        "/holds?x=" + "y" * 700,
        json={"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]},
        headers={**fan_a.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("ident", ["%00", "a%00b", "x" * 3_000], ids=["nul", "inner-nul", "long"])
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("DELETE", "/staff/keys/{}"),
        ("DELETE", "/staff/jobs/{}"),
        ("POST", "/staff/jobs/{}/requeue"),
    ],
)
async def test_path_ids_postgresql_cannot_take_are_refused_at_the_edge(
    api: AsyncTestClient[Litestar], session: AsyncSession, method: str, template: str, ident: str
) -> None:
    issued = await create_key(session, f"admin-{uuid.uuid4().hex[:8]}", StaffRole.ADMIN)
    await session.commit()
    response = await api.request(
        method,
        template.format(ident),
        headers={"Authorization": f"Bearer {issued.secret}", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code in (400, 404), (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
