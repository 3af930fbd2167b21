"""The daemon's logs: a real worker process runs real jobs, and every line written while a
job runs (the job's own, and rq's about it, a failure's included) names the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from redis import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from daemon.worker import queue
from tests.factories import advance_clock, make_event, make_fan


def _run_worker(database_url: str, redis_url: str) -> list[dict[str, Any]]:
    env = dict(
        os.environ,
        BOXOFFICE_DATABASE_URL=database_url,
        BOXOFFICE_REDIS_URL=redis_url,
        BOXOFFICE_LOG_FORMAT="json",
        BOXOFFICE_LOG_LEVEL="info",
    )
    result = subprocess.run(
        [sys.executable, "-m", "console", "worker", "--burst", "--verbose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # Every line is JSON: rq's, SQLAlchemy's and ours alike.
    return [json.loads(line) for line in result.stderr.splitlines() if line.strip()]


async def test_a_jobs_log_lines_carry_its_job_id(
    session: AsyncSession, database_url: str, redis_url: str
) -> None:
    event = await make_event(session, seats=2)
    owner = Owner(fan_id=await make_fan(session))
    await holds.create_hold(
        session,
        owner=owner,
        event_id=event.event_id,
        selection=SeatSelection(tuple(event.seat_ids)),
        policy=HoldPolicy(),
    )
    await session.commit()
    await advance_clock(session, 600)
    redis = Redis.from_url(redis_url)
    queue(redis, "holds").enqueue("jobs.holds.sweep_expired_holds", job_id="sweep-logs-1")
    # A job that fails: its traceback is logged by rq, inside the job's scope.
    queue(redis, "default").enqueue("jobs.holds.expire_hold", "not-a-hold-id", job_id="expire-bad-1")

    lines = _run_worker(database_url, redis_url)

    swept = next(line for line in lines if line["event"] == "holds expired by the sweeper")
    assert swept["count"] == 1
    assert swept["job_id"] == "sweep-logs-1"
    assert swept["job_func"] == "jobs.holds.sweep_expired_holds"
    assert swept["level"] == "info"

    # rq's own lines about each job, written while it ran, name it too.
    for job_id in ("sweep-logs-1", "expire-bad-1"):
        about = [line for line in lines if line["logger"].startswith("rq.") and job_id in line["event"]]
        assert about, lines
        during = [line for line in about if "job_id" in line]
        assert during, about
        assert {line["job_id"] for line in during} == {job_id}

    failure = [line for line in lines if line.get("job_id") == "expire-bad-1" and line["level"] == "error"]
    assert failure, lines
    # What the job bound before it failed is on the failure's line.
    assert {line["hold_id"] for line in failure} == {"not-a-hold-id"}
    assert any("badly formed" in line["event"] for line in failure)

    # Outside a job, nothing is labelled with one.
    idle = [line for line in lines if "job_id" not in line]
    assert all("hold_id" not in line for line in idle)
