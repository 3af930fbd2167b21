"""`boxoffice up` as a user runs it: a real process tree, stopped by a real signal.

After every stop, no postgres, valkey, uvicorn or rq process of that stack may remain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from console.stack import wait_gone
from tests.conftest import free_port

pytestmark = pytest.mark.slow
API_WORKERS = 2


class Up:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BOXOFFICE_")}
        environment.update(
            BOXOFFICE_DATA_DIR=str(data_dir),
            BOXOFFICE_API_PORT=str(self.port),
            BOXOFFICE_API_WORKERS=str(API_WORKERS),
            **env,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "console", "up"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def get(self, path: str) -> tuple[int, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output
            if "is up" in self.output:
                return
            time.sleep(0.2)
        raise AssertionError("boxoffice up did not come up:\n" + self.output)

    def status(self, path: str) -> int:
        """The status code of a GET of ``path``, errors included."""
        try:
            return self.get(path)[0]
        except urllib.error.HTTPError as error:
            return error.code

    def ready(self) -> bool:
        """Whether `/ready` answers 200 (a 503 is an HTTPError, an OSError like a refusal)."""
        try:
            return self.get("/ready")[0] == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.2)
        raise AssertionError("API did not come back:\n" + self.output)

    def supervised(self) -> dict[str, dict[str, object]]:
        """The supervisor's status file: each child by name."""
        record = json.loads((self.data_dir / "supervisor.json").read_text())
        assert record["pid"] == self.process.pid
        return {child["name"]: child for child in record["children"]}

    def stack_pids(self) -> list[int]:
        """Every process of this stack: the supervisor's descendants and both servers."""
        pids = [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]
        for pidfile in (
            self.data_dir / "postgres" / "postmaster.pid",
            self.data_dir / "valkey" / "valkey.pid",
        ):
            try:
                server = int(pidfile.read_text().splitlines()[0])
                # initdb's bootstrap backend writes its pid negated; it is gone by now.
                if server > 0:
                    pids += [server] + [c.pid for c in psutil.Process(server).children(recursive=True)]
            except (OSError, IndexError, ValueError, psutil.NoSuchProcess):
                pass
        return pids

    def stop(self, sig: signal.Signals) -> list[int]:
        """Signal `boxoffice up`; return the processes of its stack still alive afterwards."""
        pids = self.stack_pids()
        self.process.send_signal(sig)
        assert self.process.wait(timeout=90) == 0, self.output
        return wait_gone(pids, timeout=10) + self.strays()

    def strays(self) -> list[int]:
        marker = str(self.data_dir)
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if marker in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process.info["pid"])
        return found

    def staff_key(self) -> str:
        for line in self.lines:
            if "Staff key" in line:
                return line.split("Staff key")[1].strip(" │\n")
        raise AssertionError(self.output)


def test_up_serves_the_demo_restarts_a_crashed_child_and_leaves_nothing_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Up(data_dir)
    try:
        first.wait_ready()
        status, body = first.get("/events?limit=100")
        assert status == 200
        assert isinstance(body, dict)
        event_ids = sorted(item["id"] for item in body["items"])
        assert len(event_ids) >= 12
        assert "loaded 14 events" in first.output
        assert f"http://127.0.0.1:{first.port}/schema" in first.output
        key = first.staff_key()
        assert key.startswith("bosk_")

        # A crashed API is restarted by the supervisor, and its status file says so.
        api = next(
            c for c in psutil.Process(first.process.pid).children() if "serve" in " ".join(c.cmdline())
        )
        assert first.supervised()["api"]["pid"] == api.pid
        assert first.supervised()["api"]["restarts"] == 0
        os.killpg(api.pid, signal.SIGKILL)
        time.sleep(0.5)
        first.wait_healthy()
        assert "api exited" in first.output
        restarted = first.supervised()["api"]
        assert restarted["restarts"] == 1
        assert restarted["pid"] != api.pid
        assert first.supervised()["worker-1"]["restarts"] == 0

        left = first.stop(signal.SIGTERM)
        assert left == [], f"left running: {left}"
        assert not (data_dir / "stack.json").exists()
        assert not (data_dir / "supervisor.json").exists()
    finally:
        if first.process.poll() is None:
            first.process.kill()

    # A second run reuses the data: same events, same console key, no second demo load.
    second = Up(data_dir)
    try:
        second.wait_ready()
        assert "Demo data      already loaded" in second.output
        assert second.staff_key() == key
        _, body = second.get("/events?limit=100")
        assert isinstance(body, dict)
        assert sorted(item["id"] for item in body["items"]) == event_ids
        left = second.stop(signal.SIGINT)
        assert left == [], f"left running: {left}"
    finally:
        if second.process.poll() is None:
            second.process.kill()


def test_up_with_urls_set_uses_those_servers_and_starts_none(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    data_dir = tmp_path / "data"
    up = Up(data_dir, BOXOFFICE_DATABASE_URL=database_url, BOXOFFICE_REDIS_URL=redis_url)
    try:
        up.wait_ready()
        assert not (data_dir / "postgres").exists()
        assert not (data_dir / "valkey").exists()
        status, _ = up.get("/events")
        assert status == 200
        assert up.stop(signal.SIGTERM) == []
    finally:
        if up.process.poll() is None:
            up.process.kill()


def test_a_signal_while_starting_still_stops_the_servers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = Up(data_dir)
    try:
        # Stop as soon as PostgreSQL exists, long before the API is up.
        deadline = time.monotonic() + 60
        while not (data_dir / "postgres" / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert up.stop(signal.SIGTERM) == []
    finally:
        if up.process.poll() is None:
            up.process.kill()


def _servers_on(folder: Path, name: str) -> list[psutil.Process]:
    """Server processes working in ``folder`` (their data folder): for PostgreSQL, only the
    postmaster, not its backends."""
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if name in process.name() and Path(process.cwd()) == folder.resolve():
                parent = process.parent()
                if parent is None or not (name in parent.name() and Path(parent.cwd()) == folder.resolve()):
                    found.append(process)
        except psutil.Error:
            continue
    return found


def test_dead_servers_are_restarted_and_a_killed_up_leaves_no_second_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Up(data_dir)
    second: Up | None = None
    try:
        first.wait_ready()
        # Valkey dies under a running stack: started again at the same address, the API and
        # worker reconnect by themselves.
        valkey = int((data_dir / "valkey" / "valkey.pid").read_text().strip())
        os.kill(valkey, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "the embedded Valkey is running again" not in first.output:
            assert time.monotonic() < deadline, first.output
            time.sleep(0.2)
        while not first.ready():
            assert time.monotonic() < deadline, first.output
            time.sleep(0.2)
        assert len(_servers_on(data_dir / "valkey", "valkey")) == 1

        # So does PostgreSQL: the same folder and socket, the API's pool reconnects.
        postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "the embedded PostgreSQL is running again" not in first.output:
            assert time.monotonic() < deadline, first.output
            time.sleep(0.2)
        while not first.ready():
            assert time.monotonic() < deadline, first.output
            time.sleep(0.2)
        # `/ready` is one API process's answer. Another may still hold connections the restart
        # killed: the one request that finds them fails (503), and that process's pool is
        # replaced. So at most one failure per API process, then every request is served.
        answers = [first.status("/events?limit=1")]
        while answers[-1] != 200:
            assert len(answers) <= API_WORKERS, (answers, first.output)
            answers.append(first.status("/events?limit=1"))
        assert set(answers[:-1]) <= {503}, answers

        # The supervisor killed outright: its children follow it, the servers (daemons) stay...
        descendants = psutil.Process(first.process.pid).children(recursive=True)
        named = {c.pid: " ".join(c.cmdline()[:4]) for c in descendants}
        first.process.kill()
        first.process.wait(timeout=10)
        # Each finishes what it was doing first (a worker its current job, an API process its
        # open requests), which on a busy machine can take a while after two restarts.
        left = wait_gone(list(named), timeout=30)
        assert left == [], ([named[pid] for pid in left], first.output[-2000:])
        assert len(_servers_on(data_dir / "valkey", "valkey")) == 1
        assert len(_servers_on(data_dir / "postgres", "postgres")) == 1

        # ...and the next `boxoffice up` finds them by their folders: one of each, not two.
        second = Up(data_dir)
        second.wait_ready()
        assert len(_servers_on(data_dir / "valkey", "valkey")) == 1
        assert len(_servers_on(data_dir / "postgres", "postgres")) == 1
        assert second.get("/health") == (200, {"status": "ok"})
        assert second.ready()
        left = second.stop(signal.SIGTERM)
        assert left == [], f"left running: {left}"
        assert _servers_on(data_dir / "valkey", "valkey") == []
        assert _servers_on(data_dir / "postgres", "postgres") == []
    finally:
        for up in (first, second):
            if up is not None and up.process.poll() is None:
                up.process.kill()
        for name in ("valkey", "postgres"):
            for process in _servers_on(data_dir / name, name):
                process.kill()
