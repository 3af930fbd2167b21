"""The on-call job routes over HTTP, on the test's own Redis and database: queue depths, a
real failed job listed, requeued and deleted, and the answers for ids that are not there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.ops import audit
from booking.settings import Settings, get_settings
from jobs import admin
from tests.conftest import free_port


@pytest.fixture
def job_env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The jobs run by the drain below read their servers from settings, as in a worker."""
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def on_call(session: AsyncSession) -> dict[str, str]:
    issued = await create_key(session, "pager-1", StaffRole.ON_CALL)
    await session.commit()
    return {"Authorization": f"Bearer {issued.secret}"}


async def fail_job(redis: Redis, job_id: str) -> None:
    """A real job of ours that fails (a hold id that is not a uuid), run by a burst worker."""
    Queue("holds", connection=redis).enqueue("jobs.holds.expire_hold", "not-a-uuid", job_id=job_id)
    result = await asyncio.to_thread(admin.drain, redis, "holds")
    assert result.failed == 1


async def test_queue_depths_reflect_enqueued_jobs(
    api: AsyncTestClient[Litestar], redis: Redis, on_call: dict[str, str]
) -> None:
    for n in range(3):
        Queue("default", connection=redis).enqueue("jobs.system.check_database", job_id=f"waiting-{n}")
    response = await api.get("/staff/queues", headers=on_call)
    assert response.status_code == 200, response.text
    body = response.json()
    depths = {q["name"]: q["queued"] for q in body["queues"]}
    assert depths == {"holds": 0, "outbox": 0, "default": 3}
    default = next(q for q in body["queues"] if q["name"] == "default")
    assert default["oldest_queued_age"] >= 0
    assert set(default) == {
        "name",
        "queued",
        "started",
        "scheduled",
        "deferred",
        "failed",
        "oldest_queued_age",
    }
    assert body["workers"] == []


@pytest.mark.usefixtures("job_env")
async def test_a_failed_job_is_listed_requeued_and_deleted(
    api: AsyncTestClient[Litestar], redis: Redis, session: AsyncSession, on_call: dict[str, str]
) -> None:
    await fail_job(redis, "expire-broken")

    listed = await api.get("/staff/jobs/failed", headers=on_call)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["id"] == "expire-broken"
    assert item["queue"] == "holds"
    assert item["function"] == "jobs.holds.expire_hold"
    assert item["args"] == "'not-a-uuid'"
    assert item["error"].startswith("ValueError: badly formed hexadecimal UUID string")
    only_holds = await api.get("/staff/jobs/failed", params={"queue": "holds", "limit": 1}, headers=on_call)
    assert [i["id"] for i in only_holds.json()["items"]] == ["expire-broken"]
    elsewhere = await api.get("/staff/jobs/failed", params={"queue": "default"}, headers=on_call)
    assert elsewhere.json()["items"] == []

    requeued = await api.post("/staff/jobs/expire-broken/requeue", headers=on_call)
    assert requeued.status_code == 200, requeued.text
    assert requeued.json() == {"id": "expire-broken", "queue": "holds"}
    assert Queue("holds", connection=redis).job_ids == ["expire-broken"]
    again = await api.post("/staff/jobs/expire-broken/requeue", headers=on_call)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/job-not-failed")
    refused = await api.delete("/staff/jobs/expire-broken", headers=on_call)
    assert refused.status_code == 409  # queued: work somebody still expects to happen
    assert Queue("holds", connection=redis).job_ids == ["expire-broken"]

    # It fails again when run; now it can be deleted, once.
    assert (await asyncio.to_thread(admin.drain, redis, "holds")).failed == 1
    deleted = await api.delete("/staff/jobs/expire-broken", headers=on_call)
    assert deleted.status_code == 204, deleted.text
    assert not Job.exists("expire-broken", connection=redis)
    gone = await api.delete("/staff/jobs/expire-broken", headers=on_call)
    assert gone.status_code == 404
    assert (await api.get("/staff/jobs/failed", headers=on_call)).json()["items"] == []

    entries = list(reversed(await audit.tail(session, limit=10)))
    assert [(e.action, e.outcome, e.target_id) for e in entries] == [
        ("job.requeue", "ok", "expire-broken"),
        ("job.requeue", "failed", "expire-broken"),
        ("job.delete", "failed", "expire-broken"),
        ("job.delete", "ok", "expire-broken"),
        ("job.delete", "failed", "expire-broken"),
    ]
    assert entries[0].actor_name == "pager-1"
    assert entries[0].details["queue"] == "holds"


@pytest.mark.usefixtures("job_env")
async def test_requeue_all_failed_jobs_of_one_queue_or_every_queue(
    api: AsyncTestClient[Litestar], redis: Redis, session: AsyncSession, on_call: dict[str, str]
) -> None:
    await fail_job(redis, "broken-1")
    await fail_job(redis, "broken-2")
    none_there = await api.post("/staff/jobs/requeue-failed", json={"queue": "default"}, headers=on_call)
    assert none_there.json() == {"requeued": 0}
    response = await api.post("/staff/jobs/requeue-failed", json={}, headers=on_call)
    assert response.status_code == 200, response.text
    assert response.json() == {"requeued": 2}
    assert sorted(Queue("holds", connection=redis).job_ids) == ["broken-1", "broken-2"]
    (latest,) = await audit.tail(session, limit=1)
    assert (latest.action, latest.outcome, latest.details["requeued"]) == ("jobs.requeue_failed", "ok", 2)


async def test_unknown_jobs_are_404_and_malformed_input_is_400(
    api: AsyncTestClient[Litestar], redis: Redis, on_call: dict[str, str]
) -> None:
    for method, path in (("POST", "/staff/jobs/no-such-job/requeue"), ("DELETE", "/staff/jobs/no-such-job")):
        response = await api.request(method, path, headers=on_call)
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith("/job-not-found")
    for path in ("/staff/jobs/a:b", "/staff/jobs/" + "x" * 129, "/staff/jobs/sp%20ace"):
        response = await api.delete(path, headers=on_call)
        assert response.status_code == 400, (path, response.text)
    unknown_queue = await api.get("/staff/jobs/failed", params={"queue": "nowhere"}, headers=on_call)
    assert unknown_queue.status_code == 400
    assert unknown_queue.json()["type"].endswith("/unknown-queue")
    assert "holds, outbox, default" in unknown_queue.json()["detail"]
    for body in ({"queue": "nowhere"}, {"queue": 7}, {"everything": True}, {"queue": "a\u0000b"}):
        response = await api.post("/staff/jobs/requeue-failed", json=body, headers=on_call)
        assert response.status_code == 400, (body, response.text)
    for limit in (0, 501, "many"):
        response = await api.get("/staff/jobs/failed", params={"limit": limit}, headers=on_call)
        assert response.status_code == 400, (limit, response.text)


@pytest.fixture
async def api_without_redis(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = Settings(
        database_url=database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=tmp_path
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def test_an_unreachable_redis_answers_503_not_500(
    api_without_redis: AsyncTestClient[Litestar], on_call: dict[str, str]
) -> None:
    for method, path in (("GET", "/staff/queues"), ("POST", "/staff/jobs/some-job/requeue")):
        response = await api_without_redis.request(method, path, headers=on_call)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
