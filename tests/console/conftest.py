"""A real API on loopback for the console: uvicorn in a thread, on the test's database and
Redis, that a test can stop and start again on the same port."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.catalog.demo import load_demo
from booking.db import make_async_engine, make_sessionmaker
from booking.settings import Settings
from tests.conftest import free_port


class LiveApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.settings),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the API did not start"
            assert thread.is_alive(), "the API stopped while starting"
            time.sleep(0.05)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = self._thread = None


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
