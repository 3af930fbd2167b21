"""Supervised children for ``boxoffice up``: the API and the worker daemon.

Each child runs in its own process group so that stopping it reaches everything it forked
(uvicorn's workers, rq's work horses), and each asks the kernel to SIGTERM it if the
supervisor dies without a chance to clean up (``PR_SET_PDEATHSIG``).

With a ``status_file``, the supervisor keeps a small JSON record of its children there (name,
pid, start, restarts), rewritten whole (write aside, then rename) at every start, exit and
restart, and removed when it stops cleanly; ``boxoffice status`` reads it with
``read_status``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from console.stack import kill_group, wait_gone
from daemon.lifecycle import die_with_parent

SUPERVISOR_FILE = "supervisor.json"


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    # Exit times within the back-off window (monotonic).
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0
    # Wall-clock time of the current process's start; every restart since the first start.
    started_at: float | None = None
    restart_count: int = 0
    # The last exit's code while the child waits out its back-off; None while it runs.
    exit_code: int | None = None


class Supervisor:
    """Starts children, restarts a crashed one with back-off, stops them all on request.

    A child is never given up on, and one child's crashes never stop another: a worker
    crash-looping because Redis is gone must not take the API (which still serves reads)
    down with it. The back-off doubles with each exit in ``window`` seconds, up to
    ``max_delay``, and every restart is reported.

    Before a crashed child is started again its whole process group is killed: a child
    SIGKILLed leaves what it forked (the ticker, rq's processes, server workers) running
    under init, still holding ports and locks, and the new child would run beside them.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        window: float = 60.0,
        max_delay: float = 30.0,
        log: Callable[[str], None] = print,
        status_file: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.children: list[Child] = []
        self.window = window
        self.max_delay = max_delay
        self.log = log
        self.status_file = status_file
        self.stopping = False
        self._status_failed = False

    def add(self, name: str, argv: list[str]) -> None:
        self.children.append(Child(name, argv))

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        child.started_at = time.time()
        child.exit_code = None

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._write_status()

    def _write_status(self) -> None:
        """Rewrite the status file whole: written beside it, then renamed over it, so a
        reader sees the old record or the new one, never half of one. A failed write (a full
        disk) is reported once and never stops the supervision."""
        if self.status_file is None:
            return
        payload = {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "children": [
                {
                    "name": child.name,
                    "pid": child.process.pid if child.process is not None else None,
                    "started_at": child.started_at,
                    "restarts": child.restart_count,
                    "exit_code": child.exit_code,
                }
                for child in self.children
            ],
        }
        aside = self.status_file.with_name(f".{self.status_file.name}.{os.getpid()}")
        try:
            aside.write_text(json.dumps(payload))
            os.replace(aside, self.status_file)
        except OSError as error:
            if not self._status_failed:
                self.log(f"cannot write {self.status_file}: {error}")
            self._status_failed = True
        else:
            self._status_failed = False

    def _remove_status(self) -> None:
        if self.status_file is not None:
            self.status_file.unlink(missing_ok=True)

    def poll(self) -> None:
        """Restart any child that exited, once its back-off is over."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping or child.process is None:
                continue
            code = child.process.poll()
            if code is None:
                continue
            if child.next_start == 0.0:
                kill_group(child.process.pid, signal.SIGKILL)
                child.restarts = [t for t in child.restarts if now - t < self.window] + [now]
                delay = min(2.0 ** (len(child.restarts) - 1) * 0.5, self.max_delay)
                child.next_start = now + delay
                child.exit_code = code
                self.log(
                    f"{child.name} exited with code {code} ({len(child.restarts)} times in"
                    f" {self.window:.0f}s); restarting in {delay:.1f}s"
                )
                self._write_status()
            if now >= child.next_start:
                child.next_start = 0.0
                child.restart_count += 1
                self._spawn(child)
                self._write_status()

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children if c.process is not None]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every child's group, then SIGKILL what is left after ``timeout``."""
        self.stopping = True
        groups = self.pids()
        for pid in groups:
            kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop in {timeout:.0f}s; killing it")
        for pid in groups:
            # Group members (uvicorn workers, rq horses) may outlive their leader briefly.
            kill_group(pid, signal.SIGKILL)
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.wait(timeout=5)
        wait_gone(groups, timeout=5)
        self._remove_status()

    def kill(self) -> None:
        self.stopping = True
        for pid in self.pids():
            kill_group(pid, signal.SIGKILL)


@dataclass(frozen=True)
class ChildStatus:
    name: str
    pid: int | None
    started_at: float | None
    restarts: int
    # Whether the process runs now (checked by the reader, not taken from the file).
    running: bool
    exit_code: int | None


@dataclass(frozen=True)
class SupervisorStatus:
    pid: int
    updated_at: float
    children: list[ChildStatus]


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def read_status(path: Path) -> SupervisorStatus | None:
    """The children of the supervisor that wrote ``path``; None when there is no such file,
    it cannot be read, or the supervisor that wrote it is gone (a ``boxoffice up`` killed
    outright leaves its file behind)."""
    try:
        payload = json.loads(path.read_text())
        pid = int(payload["pid"])
        children = [
            ChildStatus(
                name=str(entry["name"]),
                pid=entry["pid"],
                started_at=entry["started_at"],
                restarts=int(entry["restarts"]),
                running=_alive(entry["pid"]),
                exit_code=entry.get("exit_code"),
            )
            for entry in payload["children"]
        ]
        updated_at = float(payload["updated_at"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not _alive(pid):
        return None
    return SupervisorStatus(pid=pid, updated_at=updated_at, children=children)


def python_module_argv(module: str, *args: str) -> list[str]:
    """Run one of our modules with this interpreter, whatever PATH says."""
    return [sys.executable, "-m", module, *args]


def child_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BOXOFFICE_DATABASE_URL"] = database_url
    env["BOXOFFICE_REDIS_URL"] = redis_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
