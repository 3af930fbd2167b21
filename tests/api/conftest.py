"""An in-process API on the test's own database and Redis, and signed-in fans."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from booking.settings import Settings

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class SignedIn:
    fan_id: uuid.UUID
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def sign_up(client: AsyncTestClient[Litestar], email: str | None = None) -> SignedIn:
    email = email or f"fan-{uuid.uuid4().hex[:10]}@example.org"
    created = await client.post("/fans", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    session = await client.post("/sessions", json={"email": email, "password": PASSWORD})
    assert session.status_code == 201, session.text
    body = session.json()
    return SignedIn(uuid.UUID(body["fan_id"]), email, body["token"])


@pytest.fixture
async def fan_a(api: AsyncTestClient[Litestar]) -> SignedIn:
    return await sign_up(api)


@pytest.fixture
async def fan_b(api: AsyncTestClient[Litestar]) -> SignedIn:
    return await sign_up(api)
