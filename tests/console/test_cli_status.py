"""`boxoffice status` against a live API (loopback), a real worker daemon, the test's
database and Redis, and a real supervisor: everything healthy, then each part down in turn,
named, with exit code 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from typer.testing import CliRunner

from booking.ops.readiness import shipped_revisions
from booking.settings import Settings
from console.cli import app
from console.supervisor import SUPERVISOR_FILE, Supervisor, read_status
from jobs import heartbeat
from tests.live_api import LiveApi

runner = CliRunner()
BEAT = 0.5  # the test daemon's heartbeat interval: stale after 1.5 s


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(settings.data_dir))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture
def daemon(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker daemon, beating every half second, whose sweeper and relay have run."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    environment = dict(
        os.environ,
        BOXOFFICE_DATABASE_URL=settings.database_url,
        BOXOFFICE_REDIS_URL=settings.redis_url,
        BOXOFFICE_DAEMON_HEARTBEAT_SECONDS=str(BEAT),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "console", "worker"],
        env=environment,
        stdout=(tmp_path / "worker.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    redis = Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            beats = heartbeat.read_daemons(redis)
            if (
                beats
                and {"sweep", "relay"} <= set(beats[0].last_runs)
                and beats[0].ticker_age_seconds is not None
            ):
                break
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the daemon never beat with its sweeper and relay run"
            time.sleep(0.1)
        yield process
    finally:
        redis.close()
        _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _status(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["status", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def test_everything_healthy_as_json_and_as_a_table(
    env: Settings, live_api: LiveApi, daemon: subprocess.Popen[bytes]
) -> None:
    code, report = _status("--api", live_api.url)
    assert code == 0, report
    assert report["healthy"] is True
    assert report["down"] == []
    assert report["api"]["status"] == "ready"
    assert report["api"]["ready"]["daemon"]["status"] == "alive"
    assert report["database"]["status"] == "ok"
    assert report["redis"]["status"] == "ok"
    assert report["migrations"]["status"] == "ok"
    assert report["migrations"]["database_revision"] == shipped_revisions().head
    assert report["daemons"]["status"] == "alive"
    (beat,) = report["daemons"]["items"]
    assert beat["pid"] == daemon.pid
    assert beat["status"] == "alive"
    assert {"sweep", "relay"} <= set(beat["last_runs"])
    assert report["sweep"]["status"] == "ok"
    assert report["relay"]["status"] == "ok"
    assert report["scheduler"]["status"] == "ok"
    assert set(report["scheduler"]["locks"]) == {"holds", "outbox", "default"}
    assert [queue["name"] for queue in report["queues"]["items"]] == ["holds", "outbox", "default"]
    assert report["queues"]["failed"] == 0
    assert report["supervisor"] == {"status": "not running", "healthy": True, "pid": None, "children": []}

    table = runner.invoke(app, ["status", "--api", live_api.url], terminal_width=200)
    assert table.exit_code == 0, table.output
    for part in (
        "API",
        "PostgreSQL",
        "Redis",
        "Migrations",
        f"Daemon {beat['id']}",
        "Hold sweeper",
        "Outbox relay",
    ):
        assert part in table.stdout
    assert "everything is healthy" in table.stdout


def test_a_stopped_api_and_a_killed_daemon_are_named_and_exit_1(
    env: Settings, live_api: LiveApi, daemon: subprocess.Popen[bytes]
) -> None:
    url = live_api.url
    live_api.stop()
    _kill(daemon)
    assert env.redis_url is not None
    redis = Redis.from_url(env.redis_url)
    try:
        deadline = time.monotonic() + 30
        while heartbeat.summarize(heartbeat.read_daemons(redis)).status is heartbeat.DaemonStatus.ALIVE:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        redis.close()
    code, report = _status("--api", url)
    assert code == 1
    assert report["healthy"] is False
    assert report["api"]["status"] == "unreachable"
    assert report["api"]["error"]
    assert report["daemons"]["status"] in ("stale", "missing")
    assert {"api", "daemons", "sweep", "relay", "scheduler"} <= set(report["down"])
    # The parts that are up still say so.
    assert report["database"]["status"] == "ok"
    assert report["redis"]["status"] == "ok"
    assert report["migrations"]["status"] == "ok"

    table = runner.invoke(app, ["status", "--api", url], terminal_width=200)
    assert table.exit_code == 1
    assert "not healthy: api (unreachable)" in table.stderr


def test_unreachable_redis_is_named_and_the_rest_still_reported(
    env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", "redis://127.0.0.1:1/0")
    code, report = _status("--api", "http://127.0.0.1:1")
    assert code == 1
    assert report["redis"]["status"] == "unavailable"
    assert report["redis"]["error"]
    for part in ("daemons", "scheduler", "queues"):
        assert report[part]["status"] == "unknown"
    assert report["database"]["status"] == "ok"
    assert {"redis", "daemons", "queues", "api"} <= set(report["down"])


def test_a_database_behind_the_code_is_named(
    env: Settings, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", empty_database_url)
    code, report = _status("--api", "http://127.0.0.1:1")
    assert code == 1
    assert report["database"]["status"] == "ok"
    assert report["migrations"]["status"] == "behind"
    assert report["migrations"]["database_revision"] is None
    assert "migrations" in report["down"]


def test_no_servers_configured_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOXOFFICE_DATABASE_URL", "BOXOFFICE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    code, report = _status("--api", "http://127.0.0.1:1")
    assert code == 1
    assert report["database"]["status"] == "not configured"
    assert report["redis"]["status"] == "not configured"
    assert "boxoffice up" in report["database"]["error"]


def _wait(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_supervisors_children_and_restarts(env: Settings) -> None:
    status_file = env.data_dir / SUPERVISOR_FILE
    supervisor = Supervisor(dict(os.environ), status_file=status_file, log=lambda line: None)
    supervisor.add("api", ["sleep", "60"])
    supervisor.add("worker-1", ["sleep", "60"])
    supervisor.start()
    try:
        first = read_status(status_file)
        assert first is not None
        assert first.pid == os.getpid()
        assert [(c.name, c.restarts, c.running) for c in first.children] == [
            ("api", 0, True),
            ("worker-1", 0, True),
        ]
        victim = first.children[1].pid
        assert victim is not None
        os.killpg(victim, signal.SIGKILL)

        def restarted() -> bool:
            supervisor.poll()
            now = read_status(status_file)
            return now is not None and now.children[1].restarts == 1 and now.children[1].running

        _wait(restarted)
        after = read_status(status_file)
        assert after is not None
        assert after.children[1].pid != victim
        assert after.children[0].pid == first.children[0].pid
        assert after.children[0].restarts == 0

        code, report = _status("--api", "http://127.0.0.1:1")
        assert code == 1  # no API at that address
        supervised = report["supervisor"]
        assert supervised["status"] == "running"
        assert supervised["pid"] == os.getpid()
        assert [(c["name"], c["restarts"], c["running"]) for c in supervised["children"]] == [
            ("api", 0, True),
            ("worker-1", 1, True),
        ]

        # A child that is down (exited, waiting out its back-off) is named.
        os.killpg(after.children[0].pid, signal.SIGKILL)
        _wait(
            lambda: (
                supervisor.children[0].process is not None
                and supervisor.children[0].process.poll() is not None
            )
        )
        _, report = _status("--api", "http://127.0.0.1:1")
        assert report["supervisor"]["status"] == "restarting: api"
        assert "supervisor" in report["down"]
    finally:
        supervisor.stop(timeout=5)
    # A clean stop leaves no file behind.
    assert not status_file.exists()
    assert read_status(status_file) is None
