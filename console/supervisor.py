"""Supervised children for ``boxoffice up``: the API and the worker daemon.

Each child runs in its own process group so that stopping it reaches everything it forked
(uvicorn's workers, rq's work horses), and each asks the kernel to SIGTERM it if the
supervisor dies without a chance to clean up (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from console.stack import kill_group, wait_gone
from daemon.lifecycle import die_with_parent


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0


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
    ) -> None:
        self.env = dict(env)
        self.children: list[Child] = []
        self.window = window
        self.max_delay = max_delay
        self.log = log
        self.stopping = False

    def add(self, name: str, argv: list[str]) -> None:
        self.children.append(Child(name, argv))

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

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
                self.log(
                    f"{child.name} exited with code {code} ({len(child.restarts)} times in"
                    f" {self.window:.0f}s); restarting in {delay:.1f}s"
                )
            if now >= child.next_start:
                child.next_start = 0.0
                self._spawn(child)

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

    def kill(self) -> None:
        self.stopping = True
        for pid in self.pids():
            kill_group(pid, signal.SIGKILL)


def python_module_argv(module: str, *args: str) -> list[str]:
    """Run one of our modules with this interpreter, whatever PATH says."""
    return [sys.executable, "-m", module, *args]


def child_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BOXOFFICE_DATABASE_URL"] = database_url
    env["BOXOFFICE_REDIS_URL"] = redis_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
