"""The metrics scrape answers 200 whatever Redis and PostgreSQL do: frozen, gone, or back.

What it cannot read in time is reported ``boxoffice_scrape_source_up 0`` and left out; what
it can read is answered as usual, within the scrape's own bound.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from api.metrics import READ_TIMEOUT_SECONDS
from booking.settings import Settings
from console.stack import EmbeddedPostgres, EmbeddedValkey
from tests.live_api import LiveApi
from tests.scrape import Scrape, parse

pytestmark = pytest.mark.slow
# The scrape's bound on its reads, and room for answering on a busy test machine.
ANSWER_WITHIN = READ_TIMEOUT_SECONDS + 3.0


@contextmanager
def live_api(settings: Settings) -> Iterator[LiveApi]:
    api = LiveApi(settings)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def timed_scrape(api: LiveApi) -> tuple[Scrape, float]:
    started = time.monotonic()
    response = httpx.get(api.url + "/metrics", timeout=30)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    return parse(response.text), took


def up(scrape: Scrape, source: str) -> float:
    return scrape.value("boxoffice_scrape_source_up", source=source)


@pytest.mark.parametrize("outage", ["frozen", "stopped"])
def test_the_scrape_answers_without_redis_and_reads_it_again_once_back(
    settings: Settings, own_valkey: EmbeddedValkey, outage: str
) -> None:
    assert own_valkey.port is not None
    assert own_valkey.pid is not None
    redis_url = f"redis://127.0.0.1:{own_valkey.port}/0"
    with live_api(settings.model_copy(update={"redis_url": redis_url})) as api:
        healthy, _ = timed_scrape(api)
        assert (up(healthy, "redis"), up(healthy, "database")) == (1, 1)
        assert healthy.has("boxoffice_queue_depth", queue="holds")

        if outage == "frozen":
            os.kill(own_valkey.pid, signal.SIGSTOP)
        else:
            own_valkey.stop()
        try:
            for _ in range(2):  # the second while the first one's read may still hang
                blind, took = timed_scrape(api)
                assert took < ANSWER_WITHIN, took
                assert (up(blind, "redis"), up(blind, "database")) == (0, 1)
                assert not blind.has("boxoffice_queue_depth")
                assert blind.has("boxoffice_outbox_pending")
                assert blind.has("boxoffice_db_pool_size", pool="api")
            assert (
                blind.value("boxoffice_scrape_errors_total", source="redis")
                >= healthy.value("boxoffice_scrape_errors_total", source="redis") + 2
            )
        finally:
            if outage == "frozen":
                os.kill(own_valkey.pid, signal.SIGCONT)
            else:
                own_valkey.start()

        deadline = time.monotonic() + 15
        while up(again := timed_scrape(api)[0], "redis") != 1:
            assert time.monotonic() < deadline, "the scrape never read Redis again"
            time.sleep(0.5)
        assert again.has("boxoffice_queue_depth", queue="holds")


def test_the_scrape_answers_with_postgresql_frozen(
    settings: Settings, own_postgres: tuple[EmbeddedPostgres, str]
) -> None:
    server, database_url = own_postgres
    pid = server.postmaster_pid
    assert pid is not None
    with live_api(settings.model_copy(update={"database_url": database_url})) as api:
        healthy, _ = timed_scrape(api)
        assert (up(healthy, "database"), up(healthy, "redis")) == (1, 1)
        # A postmaster that takes no new connection: the scrape's own read hangs in connect.
        os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(2):
                blind, took = timed_scrape(api)
                assert took < ANSWER_WITHIN, took
                assert (up(blind, "database"), up(blind, "redis")) == (0, 1)
                assert not blind.has("boxoffice_outbox_pending")
                assert blind.has("boxoffice_queue_depth", queue="holds")
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while up(again := timed_scrape(api)[0], "database") != 1:
            assert time.monotonic() < deadline, "the scrape never read PostgreSQL again"
            time.sleep(0.5)
        assert again.has("boxoffice_outbox_pending")
