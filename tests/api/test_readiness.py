"""Liveness (`/health`) and readiness (`/ready`) against real servers, and the daemons'
heartbeat as `/ready` reports it.

Unreachable servers are loopback port 1, where nothing listens: refused at once. Servers that
stop answering are in tests/faults/test_readiness_faults.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis import Redis

from api.app import create_app
from api.overload import InFlightLimit
from booking import migrations
from booking.ops.readiness import CheckStatus, ShippedRevisions, migration_status, shipped_revisions
from booking.settings import Settings
from jobs import heartbeat
from tests.conftest import _conninfo, create_database, drop_database

NOWHERE_REDIS = "redis://127.0.0.1:1/0"
NOWHERE_DATABASE = "postgresql://postgres@127.0.0.1:1/none"


def _head() -> str:
    return shipped_revisions().head


class _Worker:
    """What a heartbeat reads of an RQ worker."""

    def __init__(self, state: str, job: str | None = None) -> None:
        self.state, self.job = state, job

    def get_state(self) -> str:
        return self.state

    def get_current_job_id(self) -> str | None:
        return self.job


async def test_health_is_liveness_only_and_needs_no_server(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"redis_url": NOWHERE_REDIS, "database_url": NOWHERE_DATABASE})
    async with AsyncTestClient(app=create_app(nowhere)) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_with_everything_up(api: AsyncTestClient[Litestar]) -> None:
    response = await api.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok"
    assert checks["migrations"] == {
        "status": "ok",
        "latency_ms": checks["migrations"]["latency_ms"],
        "database_revision": _head(),
        "code_revision": _head(),
    }
    for check in checks.values():
        assert isinstance(check["latency_ms"], float)
        assert check["latency_ms"] >= 0
    # No daemon runs in this test: informational, the API is ready all the same.
    assert body["daemon"] == {"status": "missing", "last_heartbeat_age_seconds": None, "alive": 0, "stale": 0}


async def test_ready_is_503_without_redis_and_health_stays_200(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": NOWHERE_REDIS})
    async with AsyncTestClient(app=create_app(broken)) as client:
        ready = await client.get("/ready")
        health = await client.get("/health")
        # Reads go on from PostgreSQL: the API serves, it is only not ready.
        events = await client.get("/events")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["migrations"]["status"] == "ok"
    assert body["daemon"]["status"] == "unknown"
    assert health.status_code == 200
    assert events.status_code == 200


async def test_ready_is_503_without_postgresql(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": NOWHERE_DATABASE})
    async with AsyncTestClient(app=create_app(broken)) as client:
        ready = await client.get("/ready")
        health = await client.get("/health")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"]["status"] == "unavailable"
    assert checks["migrations"]["status"] == "unavailable"
    assert checks["migrations"]["database_revision"] is None
    assert checks["migrations"]["code_revision"] == _head()
    assert checks["redis"]["status"] == "ok"
    assert health.status_code == 200


@pytest.fixture
def partly_migrated_url(server_url: str) -> Iterator[str]:
    """A database migrated only to revision 0005."""
    name = f"bo_partial_{os.getpid()}"
    url = create_database(server_url, name)
    migrations.upgrade(url, "0005")
    try:
        yield url
    finally:
        drop_database(server_url, name)


async def _ready_on(settings: Settings, database_url: str) -> tuple[int, dict[str, Any]]:
    async with AsyncTestClient(
        app=create_app(settings.model_copy(update={"database_url": database_url}))
    ) as client:
        response = await client.get("/ready")
    return response.status_code, response.json()


async def test_an_empty_database_is_behind(settings: Settings, empty_database_url: str) -> None:
    status, body = await _ready_on(settings, empty_database_url)
    assert status == 503
    assert body["checks"]["database"]["status"] == "ok"
    migrations_check = body["checks"]["migrations"]
    assert migrations_check["status"] == "behind"
    assert migrations_check["database_revision"] is None
    assert migrations_check["code_revision"] == _head()


async def test_a_partly_migrated_database_is_behind(settings: Settings, partly_migrated_url: str) -> None:
    status, body = await _ready_on(settings, partly_migrated_url)
    assert status == 503
    assert body["checks"]["migrations"]["status"] == "behind"
    assert body["checks"]["migrations"]["database_revision"] == "0005"


async def test_a_database_migrated_by_a_newer_release_is_ahead(settings: Settings, database_url: str) -> None:
    with psycopg.connect(_conninfo(database_url), autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    status, body = await _ready_on(settings, database_url)
    assert status == 503
    assert body["checks"]["migrations"]["status"] == "ahead"
    assert body["checks"]["migrations"]["database_revision"] == "9999"


def test_migration_status_compares_with_every_shipped_head() -> None:
    shipped = ShippedRevisions(heads=frozenset({"b", "c"}), known=frozenset({"a", "b", "c"}))
    assert migration_status(frozenset({"b", "c"}), shipped) is CheckStatus.OK
    assert migration_status(frozenset({"b"}), shipped) is CheckStatus.BEHIND
    assert migration_status(frozenset({"a"}), shipped) is CheckStatus.BEHIND
    assert migration_status(frozenset(), shipped) is CheckStatus.BEHIND
    assert migration_status(frozenset({"b", "z"}), shipped) is CheckStatus.AHEAD


async def test_ready_reports_a_beating_daemon_and_a_stale_one(
    api: AsyncTestClient[Litestar], redis_url: str
) -> None:
    beating = heartbeat.Heartbeat(redis_url, ("holds",), interval=5.0, daemon_id="host-a:1")
    beating.attach(_Worker("idle"))
    beating.beat()
    body = (await api.get("/ready")).json()
    assert body["daemon"]["status"] == "alive"
    assert body["daemon"]["alive"] == 1
    assert 0 <= body["daemon"]["last_heartbeat_age_seconds"] < 15

    # Only a daemon whose last beat is older than three intervals: stale, and still ready.
    beating.stop()
    silent = heartbeat.Heartbeat(
        redis_url, ("holds",), interval=5.0, daemon_id="host-b:2", clock=lambda: time.time() - 20
    )
    silent.beat()
    response = await api.get("/ready")
    assert response.status_code == 200
    assert response.json()["daemon"]["status"] == "stale"
    assert response.json()["daemon"]["last_heartbeat_age_seconds"] >= 20
    silent.stop()
    assert (await api.get("/ready")).json()["daemon"]["status"] == "missing"


def test_a_heartbeat_record_reads_back_whole(redis_url: str) -> None:
    beat = heartbeat.Heartbeat(redis_url, ("holds", "outbox"), interval=2.0, daemon_id="host-c:3")
    beat.attach(_Worker("busy", "tick-relay-42"))
    beat.note_success("sweep", at=time.time() - 4)
    beat.beat()
    redis = Redis.from_url(redis_url)
    try:
        heartbeat.TickerBeat("host-c:3", 2.0).write(redis, pid=4242, now=time.time(), scheduling=["holds"])
        (found,) = heartbeat.read_daemons(redis)
        ttl = redis.pttl(heartbeat.PREFIX + "host-c:3")
    finally:
        redis.close()
    assert found.id == "host-c:3"
    assert found.pid == os.getpid()
    assert found.status is heartbeat.DaemonStatus.ALIVE
    assert found.queues == ["holds", "outbox"]
    assert (found.state, found.current_job) == ("busy", "tick-relay-42")
    assert set(found.last_runs) == {"sweep"}
    assert found.last_runs["sweep"].age_seconds >= 4
    assert (found.ticker_pid, found.scheduling) == (4242, ["holds"])
    # Expires by itself, twelve intervals after the last write.
    assert 0 < ttl <= heartbeat.TTL_INTERVALS * 2.0 * 1000
    beat.stop()


async def test_openapi_declares_both_answers_of_ready(api: AsyncTestClient[Litestar]) -> None:
    document = (await api.get("/schema/openapi.json")).json()
    responses = document["paths"]["/ready"]["get"]["responses"]
    for code in ("200", "503"):
        assert responses[code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Readiness"
        }
    schemas = document["components"]["schemas"]
    assert set(schemas["Readiness"]["properties"]) == {"status", "checks", "daemon"}
    assert set(schemas["ReadyChecks"]["properties"]) == {"database", "redis", "migrations"}
    assert "behind" in str(schemas["MigrationsReadyCheck"])
    health = document["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert health == {"$ref": "#/components/schemas/Liveness"}


async def test_probes_pass_a_process_at_its_in_flight_bound() -> None:
    bound = InFlightLimit(1)
    bound.in_flight = 1  # the one slot is taken
    served: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    class Handler:
        opt: dict[str, str] = {}

    for path in ("/health", "/ready", "/events"):
        await bound.handle({"path": path, "route_handler": Handler()}, receive, send, app)  # type: ignore[arg-type]
    assert served == ["/health", "/ready"]
    assert sent[0]["status"] == 503
