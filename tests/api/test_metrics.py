"""``GET /metrics`` on a live API: the product's counters move by exactly what happened, the
request metrics are labelled by route template, the gauges read at scrape time tell the
outbox, the holds and the queues as they are, and several processes add up in one scrape.

Counters live in this test process (the live API runs in a thread of it) and other tests
move them too, so every check is a difference between two scrapes around the act.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest
from redis import Redis
from rq import Queue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking import metrics
from booking.payments import offline
from booking.settings import Settings, get_settings
from jobs import admin
from jobs.holds import sweep_expired_holds
from jobs.outbox import relay_outbox
from jobs.payments import make_refunds
from tests.conftest import free_port
from tests.factories import SmallEvent, advance_clock, make_event, make_signed_in_fan
from tests.live_api import LiveApi
from tests.scrape import Scrape, parse, scrape

POOL_SIZE = 7  # not the default, so the gauge is seen to report this app's pool


@pytest.fixture
def job_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Jobs run inline read their servers from the environment, as in the daemon."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", settings.redis_url)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


@pytest.fixture
async def live(job_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    api = LiveApi(job_settings.model_copy(update={"db_pool_size": POOL_SIZE}))
    api.start()
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            yield client
    finally:
        api.stop()


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=3)


async def _fan(session: AsyncSession) -> dict[str, str]:
    _, token = await make_signed_in_fan(session)
    return {"Authorization": f"Bearer {token}"}


async def _hold(
    client: httpx.AsyncClient, fan: dict[str, str], body: dict[str, object], key: str | None = None
) -> httpx.Response:
    return await client.post("/holds", json=body, headers={**fan, "Idempotency-Key": key or uuid.uuid4().hex})


def _moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


async def test_a_sale_moves_each_counter_by_exactly_what_happened(
    live: httpx.AsyncClient, session: AsyncSession, event: SmallEvent
) -> None:
    fan, rival = await _fan(session), await _fan(session)
    seats = {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:2]}
    before = await scrape(live)

    key = uuid.uuid4().hex
    held = await _hold(live, fan, seats, key)
    assert held.status_code == 201, held.text
    replayed = await _hold(live, fan, seats, key)
    assert replayed.headers.get("idempotent-replayed") == "true"
    hold_id = held.json()["id"]
    paid = await live.post(
        f"/holds/{hold_id}/checkout",
        json={"provider": "offline", "card_number": offline.SUCCESS},
        headers=fan,
    )
    assert paid.json()["status"] == "confirmed", paid.text

    declined = await _hold(live, fan, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[2:3]})
    declined_id = declined.json()["id"]
    failed = await live.post(
        f"/holds/{declined_id}/checkout",
        json={"provider": "offline", "card_number": offline.DECLINED},
        headers=fan,
    )
    assert failed.json()["status"] == "failed", failed.text
    released = await live.delete(f"/holds/{declined_id}", headers=fan)
    assert released.json()["state"] == "released", released.text

    taken = await _hold(live, rival, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]})
    assert taken.status_code == 409, taken.text
    too_many = await _hold(
        live, rival, {"tier_id": str(event.ga_tier_id), "quantity": 4, "event_id": str(event.event_id)}
    )
    assert too_many.json()["type"].endswith("/not-enough-left"), too_many.text
    capped = await _hold(
        live, fan, {"tier_id": str(event.ga_tier_id), "quantity": 7, "event_id": str(event.event_id)}
    )
    assert capped.json()["type"].endswith("/ticket-cap-reached"), capped.text

    cancelled = await live.post(f"/orders/{paid.json()['order_id']}/cancel", headers=fan)
    assert cancelled.json()["state"] == "refunded", cancelled.text
    assert (await make_refunds())["succeeded"] == 1
    after = await scrape(live)

    moved = {
        ("boxoffice_holds_created_total", ("by", "fan")): 2,
        ("boxoffice_holds_created_total", ("by", "staff")): 0,
        ("boxoffice_idempotency_replays_total", None): 1,
        ("boxoffice_orders_confirmed_total", ("channel", "online")): 1,
        ("boxoffice_payments_failed_total", ("reason", "declined")): 1,
        ("boxoffice_payments_failed_total", ("reason", "provider_error")): 0,
        ("boxoffice_holds_released_total", ("by", "fan")): 1,
        ("boxoffice_holds_released_total", ("by", "staff")): 0,
        ("boxoffice_holds_expired_total", None): 0,
        ("boxoffice_refunds_issued_total", None): 1,
    }
    for (name, label), expected in moved.items():
        labels = dict([label]) if label else {}
        assert _moved(before, after, name, **labels) == expected, (name, labels)
    for reason, expected in (("seat_taken", 1), ("sold_out", 1), ("ticket_cap", 1)):
        rejected = _moved(before, after, "boxoffice_oversell_rejections_total", reason=reason, stage="hold")
        assert rejected == expected, reason
    assert _moved(before, after, "boxoffice_oversell_rejections_total", stage="confirm") == 0

    # Three refusals, each a 409 of the hold route; no server error anywhere.
    assert (
        _moved(before, after, "boxoffice_requests_total", path="/holds", method="POST", status_code="409")
        == 3
    )
    assert (
        _moved(before, after, "boxoffice_requests_total", path="/holds", method="POST", status_code="201")
        == 3
    )
    assert _moved(before, after, "boxoffice_requests_error_total") == 0
    # The pool this app was made with, and at rest nothing checked out of it.
    assert after.value("boxoffice_db_pool_size", pool="api") == POOL_SIZE
    assert after.value("boxoffice_db_pool_checked_out", pool="api") == 0
    assert _moved(before, after, "boxoffice_db_pool_wait_seconds_count") > 0


async def test_requests_are_labelled_by_route_template_and_probes_are_left_out(
    live: httpx.AsyncClient, session: AsyncSession, event: SmallEvent
) -> None:
    fan = await _fan(session)
    hold_id = (
        await _hold(live, fan, {"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]})
    ).json()["id"]
    stranger = str(uuid.uuid4())
    before = await scrape(live)
    for _ in range(2):
        assert (await live.get(f"/holds/{hold_id}", headers=fan)).status_code == 200
    assert (await live.get(f"/holds/{stranger}", headers=fan)).status_code == 404
    assert (await live.get("/health")).status_code == 200
    after = await scrape(live)

    # The hold's own route, not one below it (checkout) that an earlier test counted.
    template = next(
        path for path in after.label_values("path") if re.fullmatch(r"/holds/\{hold_id[^}]*\}", path)
    )
    assert (
        _moved(before, after, "boxoffice_requests_total", path=template, method="GET", status_code="200") == 2
    )
    assert (
        _moved(before, after, "boxoffice_requests_total", path=template, method="GET", status_code="404") == 1
    )
    assert after.value("boxoffice_request_duration_seconds_count", path=template, method="GET") >= 3
    paths = after.label_values("path")
    assert not any(hold_id in path or stranger in path for path in paths), paths
    assert not paths & {"/metrics", "/health", "/ready"}


async def test_the_sweeper_counts_the_holds_it_expires(
    live: httpx.AsyncClient, session: AsyncSession, event: SmallEvent
) -> None:
    fan = await _fan(session)
    for seat in event.seat_ids[:2]:
        response = await _hold(live, fan, {"event_id": str(event.event_id), "seat_ids": [seat]})
        assert response.status_code == 201, response.text
    await advance_clock(session, 900)
    before = await scrape(live)
    assert before.value("boxoffice_holds_live") == 2
    assert before.value("boxoffice_holds_overdue") == 2

    assert await sweep_expired_holds() == 2
    assert await sweep_expired_holds() == 0
    after = await scrape(live)
    assert _moved(before, after, "boxoffice_holds_expired_total") == 2
    assert after.value("boxoffice_holds_live") == 0
    assert after.value("boxoffice_holds_overdue") == 0


async def test_outbox_and_queue_gauges_tell_the_backlog_as_it_is(
    live: httpx.AsyncClient, session: AsyncSession, event: SmallEvent, job_settings: Settings
) -> None:
    assert job_settings.redis_url is not None
    await relay_outbox()
    empty = await scrape(live)
    assert empty.value("boxoffice_scrape_source_up", source="database") == 1
    assert empty.value("boxoffice_scrape_source_up", source="redis") == 1
    assert (
        empty.value("boxoffice_outbox_pending"),
        empty.value("boxoffice_outbox_oldest_pending_age_seconds"),
    ) == (0, 0)

    fan = await _fan(session)
    began = time.monotonic()
    for seat in event.seat_ids[:3]:
        await _hold(live, fan, {"event_id": str(event.event_id), "seat_ids": [seat]})
    await session.execute(
        text("UPDATE outbox SET created_at = created_at - interval '40 seconds' WHERE relayed_at IS NULL")
    )
    await session.commit()
    redis = Redis.from_url(job_settings.redis_url)
    try:
        for _ in range(2):
            Queue("default", connection=redis).enqueue("jobs.system.check_database")
        # A job of ours that fails for good: expiring a hold by an id that is not one. Run
        # on a thread, as a job runs in a worker: off this test's event loop.
        Queue("holds", connection=redis).enqueue("jobs.holds.expire_hold", "not-a-uuid")
        assert (await asyncio.to_thread(admin.drain, redis, "holds")).failed == 1
    finally:
        redis.close()
    backlog = await scrape(live)
    assert backlog.value("boxoffice_outbox_pending") == 3
    # At least the 40 s it was aged by, and no more than that plus what this test has taken
    # since the facts were written (the drain above can take a while on a busy machine).
    oldest = backlog.value("boxoffice_outbox_oldest_pending_age_seconds")
    assert 40 <= oldest <= 40 + (time.monotonic() - began) + 5
    # Relaying the event's own facts may have queued a search refresh before: counted from there.
    assert _moved(empty, backlog, "boxoffice_queue_depth", queue="default") == 2
    assert backlog.value("boxoffice_queue_depth", queue="holds") == 0
    assert _moved(empty, backlog, "boxoffice_queue_failed_jobs", queue="holds") == 1
    assert _moved(empty, backlog, "boxoffice_queue_failed_jobs", queue="default") == 0
    assert backlog.value("boxoffice_queue_oldest_job_age_seconds", queue="default") >= 0
    assert backlog.has("boxoffice_workers")

    await relay_outbox()
    relayed = await scrape(live)
    assert relayed.value("boxoffice_outbox_pending") == 0
    assert relayed.value("boxoffice_outbox_oldest_pending_age_seconds") == 0


async def test_a_pool_timeout_raised_in_a_middleware_is_counted_as_the_503_it_answers(
    settings: Settings, session: AsyncSession, event: SmallEvent
) -> None:
    fan = await _fan(session)
    tight = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_seconds": 0.05})
    async with AsyncTestClient(app=create_app(tight)) as client:
        before = parse((await client.get("/metrics")).text)
        # The pool's only connection is taken: the idempotency middleware's transaction,
        # opened before the route runs, waits for it and gives up.
        async with client.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            busy = parse((await client.get("/metrics")).text)
            refused = await client.post(
                "/holds",
                json={"event_id": str(event.event_id), "seat_ids": event.seat_ids[:1]},
                headers={**fan, "Idempotency-Key": uuid.uuid4().hex},
            )
        after = parse((await client.get("/metrics")).text)
    assert refused.status_code == 503, refused.text
    assert busy.value("boxoffice_db_pool_checked_out", pool="api") == 1
    assert busy.value("boxoffice_db_pool_size", pool="api") == 1
    assert (
        _moved(before, after, "boxoffice_requests_total", path="/holds", method="POST", status_code="503")
        == 1
    )
    assert _moved(before, after, "boxoffice_requests_error_total", path="/holds", status_code="503") == 1
    assert _moved(before, after, "boxoffice_requests_total", path="/holds", status_code="200") == 0
    assert _moved(before, after, "boxoffice_db_pool_timeouts_total") >= 1
    assert _moved(before, after, "boxoffice_holds_created_total") == 0


# --- several processes, one scrape --------------------------------------------------------

_COUNT_AND_WAIT = """
import sys
from booking import metrics
metrics.ORDERS_CONFIRMED.labels("online").inc(int(sys.argv[1]))
metrics.DB_POOL_SIZE.labels("api").set(int(sys.argv[1]))
print("counted", flush=True)
sys.stdin.readline()
"""


def _counting_process(folder: Path, count: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _COUNT_AND_WAIT, str(count)],
        env={**os.environ, metrics.MULTIPROC_ENV: str(folder)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "counted"
    return process


def test_processes_sharing_a_folder_add_up_and_a_dead_ones_gauges_go(tmp_path: Path) -> None:
    folder = metrics.empty_multiprocess_dir(tmp_path / "metrics")
    first, second = _counting_process(folder, 2), _counting_process(folder, 3)
    try:
        both = parse(generate_latest(metrics.scrape_registry(path=str(folder))).decode())
        assert both.value("boxoffice_orders_confirmed_total", channel="online") == 5
        pools = {s.labels["pid"]: s.value for s in both.matching("boxoffice_db_pool_size", pool="api")}
        assert pools == {str(first.pid): 2, str(second.pid): 3}

        first.kill()
        first.wait(timeout=10)
        one_left = parse(generate_latest(metrics.scrape_registry(path=str(folder))).decode())
        # What the killed process counted stays counted; its gauge is gone with it.
        assert one_left.value("boxoffice_orders_confirmed_total", channel="online") == 5
        pools = {s.labels["pid"]: s.value for s in one_left.matching("boxoffice_db_pool_size", pool="api")}
        assert pools == {str(second.pid): 3}
    finally:
        for process in (first, second):
            process.kill()
            process.wait(timeout=10)


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``boxoffice ARGS`` in a process group of its own (its server workers, its ticker)."""
    return subprocess.Popen(
        [sys.executable, "-m", "console", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    except ProcessLookupError:
        child.wait(timeout=10)


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer")


@pytest.mark.slow
async def test_the_apis_scrape_adds_up_every_api_process_and_the_daemon(
    settings: Settings, session: AsyncSession, event: SmallEvent, tmp_path: Path
) -> None:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    fan = await _fan(session)
    folder = metrics.empty_multiprocess_dir(tmp_path / "metrics")
    env = {
        **os.environ,
        "BOXOFFICE_DATABASE_URL": settings.database_url,
        "BOXOFFICE_REDIS_URL": settings.redis_url,
        "BOXOFFICE_DATA_DIR": str(settings.data_dir),
        metrics.MULTIPROC_ENV: str(folder),
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    children = [_start(env, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2")]
    try:
        _wait_for(base + "/health", 60)
        # A new connection per request: the kernel hands each to either process, and none
        # is left open to the process the test kills.
        async with httpx.AsyncClient(base_url=base, timeout=10, headers={"Connection": "close"}) as client:
            for seat in event.seat_ids[:2]:
                held = await _hold(client, fan, {"event_id": str(event.event_id), "seat_ids": [seat]})
                assert held.status_code == 201, held.text
            await advance_clock(session, 900)
            # The daemon's ticker enqueues the sweeper at once: it expires both holds, counted
            # in the daemon's process.
            children.append(_start(env, "worker"))
            deadline = time.monotonic() + 60
            while (seen := await scrape(client)).value("boxoffice_holds_expired_total") < 2:
                assert time.monotonic() < deadline, "the daemon's expiries never showed in the API's scrape"
                await asyncio.sleep(0.5)
            assert seen.value("boxoffice_holds_expired_total") == 2
            assert seen.value("boxoffice_holds_created_total", by="fan") == 2

            requests = 30
            for _ in range(requests):
                assert (await client.get("/ticket-key")).status_code == 200
            after = await scrape(client)
            assert after.value("boxoffice_requests_total", path="/ticket-key") == requests
            api_processes = {s.labels["pid"] for s in after.matching("boxoffice_db_pool_size", pool="api")}
            assert len(api_processes) == 2, api_processes

            # An API process killed outright: its counts stay, its pool gauges go.
            victim = int(sorted(api_processes)[0])
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while str(victim) in (later := await scrape(client)).label_values("pid"):
                assert time.monotonic() < deadline, "a killed process's gauges stayed"
                await asyncio.sleep(0.5)
            assert later.value("boxoffice_requests_total", path="/ticket-key") == requests
            assert later.value("boxoffice_holds_expired_total") == 2
    finally:
        for child in children:
            _stop(child)
