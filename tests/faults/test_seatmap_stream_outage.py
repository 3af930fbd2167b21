"""Valkey stalls or dies under live seat-map streams, and comes back.

An open stream is told to refetch and ends within seconds (it never hangs on a Redis that
does not answer); a new one is refused with 503 and Retry-After at once while Redis is away;
once it is back, new streams work and carry changes again, in the same API process: the
channels plugin's reader survived the outage.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.settings import Settings, get_settings
from console.stack import EmbeddedValkey
from jobs.outbox import relay_outbox
from tests.factories import make_event, make_signed_in_fan
from tests.live_api import LiveApi
from tests.sse import SseReader

pytestmark = pytest.mark.slow
CLIENT_TIMEOUT = 5.0  # a fan's client gives up after this; no answer may take longer


@pytest.fixture
def own_valkey_settings(
    settings: Settings, own_valkey: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The API and the relay (run inline, as the worker would) on a Valkey of the test's own."""
    url = f"redis://127.0.0.1:{own_valkey.port}/0"
    assert settings.database_url is not None
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", url)
    get_settings.cache_clear()
    yield settings.model_copy(update={"redis_url": url})
    get_settings.cache_clear()


async def _connect_until_live(http: httpx.AsyncClient, path: str, seconds: float) -> None:
    """Until a new stream opens and says where the map stands (Redis is back)."""
    deadline = time.monotonic() + seconds
    while True:
        started = time.monotonic()
        async with http.stream("GET", path) as stream:
            if stream.status_code == 200:
                first = await SseReader(stream).event(within=CLIENT_TIMEOUT)
                if first.event == "snapshot-version":
                    return
            else:
                assert stream.status_code == 503
                assert stream.headers["retry-after"]
        assert time.monotonic() - started < CLIENT_TIMEOUT
        assert time.monotonic() < deadline, "new streams never worked again"
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("break_it", ["stop", "kill"])
async def test_streams_through_a_valkey_outage(
    own_valkey_settings: Settings, own_valkey: EmbeddedValkey, session: AsyncSession, break_it: str
) -> None:
    event = await make_event(session, seats=4, ga_capacity=4)
    _, token = await make_signed_in_fan(session)
    path = f"/events/{event.event_id}/seatmap/stream"
    api = LiveApi(own_valkey_settings)
    api.start()
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=CLIENT_TIMEOUT) as http:
            async with http.stream("GET", path) as stream:
                reader = SseReader(stream)
                assert (await reader.event()).event == "snapshot-version"
                pid = own_valkey.pid
                assert pid is not None
                os.kill(pid, signal.SIGSTOP if break_it == "stop" else signal.SIGKILL)
                broke_at = time.monotonic()
                told = await reader.event(within=10)
                assert told.event == "refetch"
                assert told.json() == {"version": None, "reason": "unavailable"}
                with pytest.raises(StopAsyncIteration):
                    await reader.block(within=CLIENT_TIMEOUT)
                assert time.monotonic() - broke_at < 10

            # While it is away: refused at once, saying when to come back.
            for _ in range(3):
                started = time.monotonic()
                refused = await http.get(path)
                assert time.monotonic() - started < 2
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "5"
                assert refused.json()["type"].endswith("/seatmap-stream-unavailable")

            if break_it == "stop":
                os.kill(pid, signal.SIGCONT)
            else:
                own_valkey.restart()
            await _connect_until_live(http, path, seconds=30)

            async with http.stream("GET", path) as stream:
                reader = SseReader(stream)
                assert (await reader.event()).event == "snapshot-version"
                held = await http.post(
                    "/holds",
                    json={"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
                )
                assert held.status_code == 201, held.text
                await relay_outbox()
                change = await reader.event(within=3)
            assert change.event == "change"
            units = change.json()["units"]
            assert units[0]["state"] == "unavailable"
            assert units[0]["seat_ids"] == event.seat_ids[:1]
    finally:
        api.stop()
