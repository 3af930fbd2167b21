"""The on-call commands for queues, failed jobs, staff keys and the audit log, run with
CliRunner against the test's Redis and database: output for people and ``--json`` shapes,
exit codes, refusal without ``--yes`` when there is no terminal, and the audit rows."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from typer.testing import CliRunner

from booking.accounts.staff import authenticate
from booking.db import make_async_engine, make_sessionmaker
from booking.ops import audit
from booking.settings import get_settings
from console.cli import app
from jobs import admin
from tests.conftest import free_port

runner = CliRunner()
NAMES = "holds, outbox, default"


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")  # tables as wide as a terminal's: no cell cut short
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def audit_entries(database_url: str, action: str | None = None) -> list[audit.AuditView]:
    """The audit log, oldest first."""

    async def read() -> list[audit.AuditView]:
        engine = make_async_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                return list(reversed(await audit.tail(session, limit=100, action=action)))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def fail_job(redis: Redis, job_id: str, queue_name: str = "holds") -> None:
    """A real job of ours that fails: expiring a hold whose id is not a uuid."""
    Queue(queue_name, connection=redis).enqueue("jobs.holds.expire_hold", "not-a-uuid", job_id=job_id)
    assert admin.drain(redis, queue_name).failed == 1


def one_line(text: str) -> None:
    assert len(text.strip().splitlines()) == 1, text
    assert "Traceback" not in text


# -- queues -------------------------------------------------------------------------------


def test_queues_status_as_table_and_json(env: str, redis: Redis) -> None:
    Queue("default", connection=redis).enqueue("jobs.system.check_database", job_id="waiting")
    fail_job(redis, "broken")

    code, stdout, _ = run("queues", "status", "--json")
    assert code == 0
    body = json.loads(stdout)
    assert set(body) == {"queues", "workers"}
    rows = {q["name"]: q for q in body["queues"]}
    assert list(rows) == ["holds", "outbox", "default"]
    assert rows["default"]["queued"] == 1
    assert rows["holds"]["failed"] == 1
    assert set(rows["default"]) == {
        "name",
        "queued",
        "started",
        "scheduled",
        "deferred",
        "failed",
        "oldest_queued_age",
    }
    assert body["workers"] == []

    code, stdout, _ = run("queues", "status")
    assert code == 0
    assert "Queues" in stdout
    assert "no workers are running" in stdout


def test_drain_runs_the_queue_shows_progress_and_audits(env: str, redis: Redis) -> None:
    queue_ = Queue("default", connection=redis)
    queue_.enqueue("jobs.system.check_database", job_id="ok-1")
    queue_.enqueue("jobs.system.check_database", job_id="ok-2")

    code, stdout, stderr = run("queues", "drain", "default")
    assert code == 2  # no terminal to confirm on, and no --yes
    assert "refusing without --yes" in stderr
    assert queue_.count == 2

    code, stdout, stderr = run("queues", "drain", "default", "--yes")
    assert code == 0, stderr
    assert "drained default: ran 2 of 2, 0 failed" in stdout
    assert "draining default" in stderr  # the progress bar
    assert Job.fetch("ok-2", connection=redis).get_status() == JobStatus.FINISHED
    (entry,) = audit_entries(env, "queue.drain")
    assert (entry.outcome, entry.actor_type, entry.target_type, entry.target_id) == (
        "ok",
        "cli",
        "queue",
        "default",
    )
    assert entry.details == {"queue": "default", "total": 2, "done": 2, "failed": 0, "left": 0}

    code, stdout, _ = run("queues", "drain", "default", "--yes")
    assert code == 3
    assert "queue default is empty" in stdout
    code, stdout, _ = run("queues", "drain", "default", "--yes", "--json")
    assert code == 3
    assert json.loads(stdout) == {"queue": "default", "done": 0}


def test_drain_with_a_failing_job_exits_1_and_json_gives_the_counts(env: str, redis: Redis) -> None:
    Queue("holds", connection=redis).enqueue("jobs.holds.expire_hold", "not-a-uuid", job_id="bad")
    code, stdout, stderr = run("queues", "drain", "holds", "--yes", "--json")
    assert code == 1
    assert json.loads(stdout) == {"queue": "holds", "total": 1, "done": 1, "failed": 1, "left": 0}
    assert "boxoffice jobs failed --queue holds" in stderr
    one_line(stderr)


def test_drain_of_an_unknown_queue_is_usage_and_lists_the_names(env: str) -> None:
    code, _, stderr = run("queues", "drain", "nowhere", "--yes")
    assert code == 2
    assert NAMES in stderr
    one_line(stderr)
    assert audit_entries(env) == []


# -- jobs ---------------------------------------------------------------------------------


def test_jobs_failed_as_table_and_json(env: str, redis: Redis) -> None:
    code, stdout, _ = run("jobs", "failed")
    assert (code, stdout.strip()) == (0, "no failed jobs")
    fail_job(redis, "broken-1")
    fail_job(redis, "broken-2", queue_name="default")

    code, stdout, _ = run("jobs", "failed", "--json")
    assert code == 0
    items = json.loads(stdout)["items"]
    assert [i["id"] for i in items] == ["broken-2", "broken-1"]
    assert set(items[0]) == {"id", "queue", "function", "args", "enqueued_at", "ended_at", "error"}
    assert items[1]["function"] == "jobs.holds.expire_hold"
    assert items[1]["error"].startswith("ValueError: badly formed")

    code, stdout, _ = run("jobs", "failed", "--queue", "holds", "--json")
    assert [i["id"] for i in json.loads(stdout)["items"]] == ["broken-1"]
    code, stdout, _ = run("jobs", "failed")
    assert code == 0
    assert "Failed jobs" in stdout
    assert "broken-1" in stdout
    code, _, stderr = run("jobs", "failed", "--queue", "nowhere")
    assert code == 2
    assert NAMES in stderr


def test_requeue_one_job_then_again_is_refused_and_both_are_audited(env: str, redis: Redis) -> None:
    fail_job(redis, "broken")
    code, stdout, _ = run("jobs", "requeue", "broken", "--json")
    assert code == 0
    assert json.loads(stdout) == {"id": "broken", "queue": "holds"}
    assert Queue("holds", connection=redis).job_ids == ["broken"]

    code, stdout, stderr = run("jobs", "requeue", "broken")
    assert code == 1
    assert "is queued, not failed" in stderr
    one_line(stderr)
    code, _, stderr = run("jobs", "requeue", "never-was")
    assert code == 1
    one_line(stderr)

    entries = audit_entries(env, "job.requeue")
    assert [(e.outcome, e.target_id) for e in entries] == [
        ("ok", "broken"),
        ("failed", "broken"),
        ("failed", "never-was"),
    ]
    assert entries[0].details == {"queue": "holds"}
    assert entries[1].details["problem"] == "job-not-failed"
    assert entries[2].details["problem"] == "job-not-found"


def test_requeue_all_asks_first_and_counts(env: str, redis: Redis) -> None:
    assert run("jobs", "requeue")[0] == 2  # neither JOB_ID nor --all
    assert run("jobs", "requeue", "x", "--all")[0] == 2
    assert run("jobs", "requeue", "x", "--queue", "holds")[0] == 2
    code, stdout, _ = run("jobs", "requeue", "--all", "--json")
    assert (code, json.loads(stdout)) == (3, {"requeued": 0})

    fail_job(redis, "a")
    fail_job(redis, "b")
    fail_job(redis, "c", queue_name="default")
    code, _, stderr = run("jobs", "requeue", "--all")
    assert code == 2
    assert "Requeue 3 failed jobs: refusing without --yes" in stderr
    code, _, stderr = run("jobs", "requeue", "--all", "--queue", "nowhere", "--yes")
    assert code == 2
    assert NAMES in stderr

    code, stdout, _ = run("jobs", "requeue", "--all", "--queue", "holds", "--yes")
    assert (code, stdout.strip()) == (0, "requeued 2 failed jobs on holds")
    code, stdout, _ = run("jobs", "requeue", "--all", "--yes", "--json")
    assert (code, json.loads(stdout)) == (0, {"requeued": 1})
    entries = audit_entries(env, "jobs.requeue_failed")
    assert [(e.target_id, e.details) for e in entries] == [
        ("holds", {"requeued": 2}),
        (None, {"requeued": 1}),
    ]


def test_delete_asks_first_removes_only_failed_jobs_and_audits(env: str, redis: Redis) -> None:
    fail_job(redis, "broken")
    Queue("default", connection=redis).enqueue("jobs.system.check_database", job_id="waiting")

    code, _, stderr = run("jobs", "delete", "broken")
    assert code == 2
    assert "refusing without --yes" in stderr
    assert Job.exists("broken", connection=redis)

    code, stdout, _ = run("jobs", "delete", "broken", "--yes", "--json")
    assert code == 0
    assert json.loads(stdout) == {"id": "broken", "queue": "holds", "deleted": True}
    assert not Job.exists("broken", connection=redis)

    code, _, stderr = run("jobs", "delete", "broken", "--yes")
    assert code == 1
    one_line(stderr)
    code, _, stderr = run("jobs", "delete", "waiting", "--yes")
    assert code == 1
    assert "is queued, not failed" in stderr
    assert Job.exists("waiting", connection=redis)

    entries = audit_entries(env, "job.delete")
    assert [(e.outcome, e.target_id) for e in entries] == [
        ("ok", "broken"),
        ("failed", "broken"),
        ("failed", "waiting"),
    ]


def test_a_job_command_changes_nothing_when_the_database_is_down(
    env: str, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_job(redis, "broken")
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    code, _, stderr = run("jobs", "requeue", "broken")
    assert code == 1
    assert stderr.startswith("boxoffice: cannot reach the database")
    one_line(stderr)
    # Without a database there would be no audit row, so Redis was not touched.
    assert Job.fetch("broken", connection=redis).get_status() == JobStatus.FAILED


def test_unreachable_redis_is_one_line(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    for args in (("queues", "status"), ("jobs", "failed"), ("queues", "drain", "holds", "--yes")):
        code, _, stderr = run(*args)
        assert code == 1, args
        assert stderr.startswith("boxoffice: cannot reach Redis"), stderr
        one_line(stderr)
    code, _, stderr = run("jobs", "requeue", "some-job")
    assert code == 1
    assert stderr.startswith("boxoffice: cannot reach Redis")
    (entry,) = audit_entries(env, "job.requeue")
    assert (entry.outcome, entry.details["problem"]) == ("failed", "redis-unreachable")


# -- staff keys ---------------------------------------------------------------------------


def test_create_key_prints_the_secret_once_and_audits(env: str) -> None:
    code, stdout, stderr = run("staff", "create-key", "--role", "on_call", "--name", "pager-1", "--json")
    assert code == 0, stderr
    issued = json.loads(stdout)
    assert set(issued) == {"id", "name", "role", "secret"}
    assert (issued["name"], issued["role"]) == ("pager-1", "on_call")
    assert issued["secret"].startswith("bosk_")
    assert _authenticates(env, issued["secret"])

    code, stdout, stderr = run("staff", "create-key", "--role", "BOX_OFFICE", "--name", "till-1")
    assert code == 0, stderr
    assert "created staff key 'till-1' (box_office)" in stdout
    assert "bosk_" in stdout
    assert "not shown again" in stderr

    code, stdout, stderr = run("staff", "create-key", "--role", "admin", "--name", "pager-1")
    assert code == 1
    assert "already exists" in stderr
    one_line(stderr)
    assert stdout == ""

    entries = audit_entries(env, "staff_key.create")
    assert [(e.outcome, e.target_id, e.details["role"]) for e in entries] == [
        ("ok", "pager-1", "on_call"),
        ("ok", "till-1", "box_office"),
        ("failed", "pager-1", "admin"),
    ]
    assert all(e.actor_type == "cli" for e in entries)
    assert all("bosk_" not in json.dumps(e.details) for e in entries)


@pytest.mark.parametrize(
    "args",
    [
        ("--role", "janitor", "--name", "x"),
        ("--name", "x"),
        ("--role", "admin"),
        ("--role", "admin", "--name", ""),
        ("--role", "admin", "--name", "x" * 121),
    ],
)
def test_create_key_with_bad_usage_exits_2_and_creates_nothing(env: str, args: tuple[str, ...]) -> None:
    code, _, _ = run("staff", "create-key", *args)
    assert code == 2
    assert audit_entries(env) == []


def test_list_and_revoke_keys(env: str) -> None:
    code, stdout, _ = run("staff", "list")
    assert (code, "no staff keys" in stdout) == (0, True)
    run("staff", "create-key", "--role", "gate", "--name", "north-1")
    run("staff", "create-key", "--role", "on_call", "--name", "pager-1")

    code, _, stderr = run("staff", "revoke", "north-1")
    assert code == 2
    assert "refusing without --yes" in stderr
    code, stdout, _ = run("staff", "revoke", "north-1", "--yes", "--json")
    assert (code, json.loads(stdout)) == (0, {"name": "north-1", "revoked": True})
    code, _, stderr = run("staff", "revoke", "north-1", "--yes")
    assert code == 1
    assert "no live staff key called 'north-1'" in stderr

    code, stdout, _ = run("staff", "list", "--json")
    items = json.loads(stdout)["items"]
    assert [(k["name"], k["revoked_at"] is None) for k in items] == [("pager-1", True), ("north-1", False)]
    assert set(items[0]) == {"id", "name", "role", "created_at", "last_used_at", "revoked_at"}
    code, stdout, _ = run("staff", "list")
    assert "Staff keys" in stdout
    assert "revoked" in stdout

    entries = audit_entries(env, "staff_key.revoke")
    assert [(e.outcome, e.target_id) for e in entries] == [("ok", "north-1"), ("failed", "north-1")]


def test_an_unreachable_database_is_one_line(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    for args in (
        ("staff", "list"),
        ("audit", "tail"),
        ("staff", "create-key", "--role", "gate", "--name", "x"),
    ):
        code, _, stderr = run(*args)
        assert code == 1, args
        assert stderr.startswith("boxoffice: cannot reach the database")
        one_line(stderr)


def _authenticates(database_url: str, secret: str) -> bool:
    async def check() -> bool:
        engine = make_async_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                return await authenticate(session, secret) is not None
        finally:
            await engine.dispose()

    return asyncio.run(check())


# -- audit log ----------------------------------------------------------------------------


def test_audit_tail_oldest_first_with_a_limit(env: str) -> None:
    code, stdout, _ = run("audit", "tail")
    assert (code, "the audit log is empty" in stdout) == (0, True)
    for name in ("k-1", "k-2", "k-3"):
        run("staff", "create-key", "--role", "gate", "--name", name)
    run("staff", "revoke", "k-1", "--yes")

    code, stdout, _ = run("audit", "tail", "--limit", "3", "--json")
    assert code == 0
    items = json.loads(stdout)["items"]
    assert [(i["action"], i["target_id"]) for i in items] == [
        ("staff_key.create", "k-2"),
        ("staff_key.create", "k-3"),
        ("staff_key.revoke", "k-1"),
    ]
    assert set(items[0]) == {
        "id",
        "at",
        "actor_type",
        "actor_id",
        "actor_name",
        "action",
        "target_type",
        "target_id",
        "outcome",
        "details",
    }
    code, stdout, _ = run("audit", "tail", "--action", "staff_key.revoke", "--json")
    assert [i["target_id"] for i in json.loads(stdout)["items"]] == ["k-1"]
    code, stdout, _ = run("audit", "tail")
    assert "Audit log" in stdout
    assert "staff_key.revoke" in stdout
    assert run("audit", "tail", "--limit", "0")[0] == 2


def test_audit_tail_follow_prints_each_new_entry_once_until_ctrl_c(env: str, redis_url: str) -> None:
    run("staff", "create-key", "--role", "gate", "--name", "before")
    follower = subprocess.Popen(
        [sys.executable, "-m", "console", "audit", "tail", "--follow", "--json"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout or ()], daemon=True)
    reader.start()
    try:
        first = json.loads(lines.get(timeout=60))
        assert (first["action"], first["target_id"]) == ("staff_key.create", "before")
        run("staff", "create-key", "--role", "gate", "--name", "after-1")
        run("staff", "revoke", "after-1", "--yes")
        second = json.loads(lines.get(timeout=30))
        third = json.loads(lines.get(timeout=30))
        assert [(e["action"], e["target_id"]) for e in (second, third)] == [
            ("staff_key.create", "after-1"),
            ("staff_key.revoke", "after-1"),
        ]
        time.sleep(2.5)  # a few more polls: nothing is printed twice
        assert lines.empty()
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    assert follower.returncode == 0, follower.stderr.read() if follower.stderr else ""
