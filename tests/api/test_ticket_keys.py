"""The published ticket keys (`GET /ticket-keys`, `/.well-known/jwks.json`, `GET /ticket-key`)
and a key rotation through the API: codes signed by a previous key stay good at the gate,
online and uploaded, while that key is published, and are refused once it is not."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.keys import PREVIOUS_KEYS_DIR
from booking.settings import Settings
from booking.tickets.signing import key_id, keys_from_jwks
from tests.api.conftest import sign_up
from tests.api.test_checkin import buy
from tests.factories import SmallEvent, make_event

PROBLEMS = "https://boxoffice.dev/problems/"


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def kid(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key())


@contextlib.asynccontextmanager
async def api_signing_with(
    settings: Settings, key: Ed25519PrivateKey, previous: str | None = None
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The API with ``key`` as its signing key and ``previous`` as its previous keys."""
    configured = settings.model_copy(
        update={"ticket_signing_key": SecretStr(private_pem(key)), "ticket_previous_keys": previous}
    )
    async with AsyncTestClient(app=create_app(configured)) as client:
        yield client


async def published(api: AsyncTestClient[Litestar]) -> list[str]:
    response = await api.get("/ticket-keys")
    assert response.status_code == 200, response.text
    return [key["kid"] for key in response.json()["keys"]]


async def scan(api: AsyncTestClient[Litestar], gate: dict[str, str], token: str) -> tuple[int, Any]:
    response = await api.post("/staff/checkin", json={"token": token, "gate": "north-1"}, headers=gate)
    return response.status_code, response.json()


@pytest.fixture
async def gate(session: AsyncSession) -> dict[str, str]:
    issued = await create_key(session, f"gate-{uuid.uuid4().hex[:6]}", StaffRole.GATE)
    await session.commit()
    return {"Authorization": f"Bearer {issued.secret}"}


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=4, ga_capacity=1)


async def test_the_key_set_publishes_the_current_key_as_a_jwk(api: AsyncTestClient[Litestar]) -> None:
    response = await api.get("/ticket-keys")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert {part.strip() for part in response.headers["cache-control"].split(",")} == {
        "public",
        "max-age=300",
    }
    body = response.json()
    assert len(body["keys"]) == 1
    entry = body["keys"][0]
    pem = await api.get("/ticket-key")
    assert pem.status_code == 200
    assert pem.headers["content-type"].startswith("application/x-pem-file")
    current = serialization.load_pem_public_key(pem.content)
    assert isinstance(current, Ed25519PublicKey)
    raw = current.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert entry == {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": key_id(current),
        "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        "use": "sig",
        "alg": "EdDSA",
        "not_before": None,
        "not_after": None,
    }
    assert pem.headers["boxoffice-key-id"] == entry["kid"]
    assert [key.kid for key in keys_from_jwks(body)] == [entry["kid"]]
    well_known = await api.get("/.well-known/jwks.json")
    assert well_known.status_code == 200
    assert well_known.json() == body


async def test_a_previous_key_verifies_at_the_gate_while_it_is_published(
    settings: Settings, event: SmallEvent, gate: dict[str, str]
) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with api_signing_with(settings, old) as api:
        fan = await sign_up(api)
        bought = await buy(api, fan, event, event.seat_ids[:3])
        assert await published(api) == [kid(old)]
    assert {token.split(".")[0] for token in bought.tokens} == {kid(old)}

    # Rotated: the new key signs, the old one is published after it and still verifies.
    async with api_signing_with(settings, new, previous=public_pem(old)) as api:
        assert await published(api) == [kid(new), kid(old)]
        status, answer = await scan(api, gate, bought.tokens[0])
        assert status == 200, answer
        assert answer["result"] == "admitted"
        assert answer["ticket_id"] == bought.ticket_ids[0]
        uploaded = await api.post(
            "/staff/checkin/offline",
            json={
                "gate": "south-2",
                "scans": [{"token": bought.tokens[1], "scanned_at": dt.datetime.now(dt.UTC).isoformat()}],
            },
            headers=gate,
        )
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["scans"][0]["result"] == "admitted"
        # A ticket opened now shows a code of the current key.
        page = await api.get(f"/tickets/{bought.ticket_ids[2]}", headers=fan.headers)
        assert page.json()["token"].split(".")[0] == kid(new)

    # The old key no longer published: its codes are refused, the new ones admitted.
    async with api_signing_with(settings, new) as api:
        assert await published(api) == [kid(new)]
        status, answer = await scan(api, gate, bought.tokens[2])
        assert status == 422
        assert answer["type"] == PROBLEMS + "ticket-key-unknown"
        page = await api.get(f"/tickets/{bought.ticket_ids[2]}", headers=fan.headers)
        status, answer = await scan(api, gate, page.json()["token"])
        assert (status, answer["result"]) == (200, "admitted")


async def test_a_previous_key_past_its_window_is_neither_published_nor_trusted(
    settings: Settings, event: SmallEvent, gate: dict[str, str]
) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with api_signing_with(settings, old) as api:
        fan = await sign_up(api)
        bought = await buy(api, fan, event, event.seat_ids[:1])

    folder = settings.data_dir / "keys" / PREVIOUS_KEYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    retired = folder / "old.pem"
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    retired.write_text(f"Not-After: {until.isoformat()}\n{public_pem(old)}")
    async with api_signing_with(settings, new) as api:
        keys = (await api.get("/ticket-keys")).json()["keys"]
        assert [key["kid"] for key in keys] == [kid(new), kid(old)]
        assert dt.datetime.fromisoformat(keys[1]["not_after"]) == until

    ended = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    retired.write_text(f"Not-After: {ended.isoformat()}\n{public_pem(old)}")
    async with api_signing_with(settings, new) as api:
        assert await published(api) == [kid(new)]
        status, answer = await scan(api, gate, bought.tokens[0])
        assert status == 422
        assert answer["type"] == PROBLEMS + "ticket-key-unknown"
