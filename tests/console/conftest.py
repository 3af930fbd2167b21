"""The console's fixtures: a real API on loopback (tests.live_api) on the test's database and
Redis, that a test can stop and start again on the same port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.catalog.demo import load_demo
from booking.db import make_async_engine, make_sessionmaker
from booking.settings import Settings
from tests.live_api import LiveApi


async def _prepare(url: str, role: StaffRole) -> str:
    engine = make_async_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            await load_demo(session)
            issued = await create_key(session, f"console-{role.value}", role)
            await session.commit()
            return issued.secret
    finally:
        await engine.dispose()


@pytest.fixture
def admin_key(settings: Settings) -> str:
    assert settings.database_url is not None
    return asyncio.run(_prepare(settings.database_url, StaffRole.ADMIN))


@pytest.fixture
def live_api(settings: Settings, admin_key: str) -> Iterator[LiveApi]:
    api = LiveApi(settings)
    api.start()
    try:
        yield api
    finally:
        api.stop()


async def _key(url: str, role: StaffRole) -> str:
    engine = make_async_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            issued = await create_key(session, f"console-{role.value}", role)
            await session.commit()
            return issued.secret
    finally:
        await engine.dispose()


@pytest.fixture
def box_office_key(settings: Settings, admin_key: str) -> str:
    assert settings.database_url is not None
    return asyncio.run(_key(settings.database_url, StaffRole.BOX_OFFICE))
