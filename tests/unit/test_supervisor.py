from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from console.stack import wait_gone
from console.supervisor import GaveUp, Supervisor

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[1], "w").write(str(grandchild.pid))
time.sleep(300)
"""


def _read_pid(path: Path, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"no pid in {path}")


def test_stop_kills_a_child_that_ignores_sigterm_and_everything_it_forked(tmp_path: Path) -> None:
    supervisor = Supervisor(os.environ, log=lambda _: None)
    supervisor.add("stubborn", [sys.executable, "-c", STUBBORN, str(tmp_path / "grandchild")])
    supervisor.start()
    grandchild = _read_pid(tmp_path / "grandchild")
    child = supervisor.pids()[0]
    supervisor.stop(timeout=1)
    assert wait_gone([child, grandchild], timeout=5) == []


def test_a_crashed_child_is_restarted_then_given_up_on() -> None:
    lines: list[str] = []
    supervisor = Supervisor(os.environ, max_restarts=2, window=60, log=lines.append)
    supervisor.add("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor.start()
    first = supervisor.pids()[0]

    def poll_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            supervisor.poll()
            time.sleep(0.05)

    with pytest.raises(GaveUp, match="crasher exited 3 times"):
        poll_for(30)
    assert supervisor.pids()[0] != first
    assert sum("restarting" in line for line in lines) == 2
    supervisor.stop(timeout=1)


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    script = (
        "import os, sys, time\n"
        "from console.supervisor import Supervisor\n"
        "s = Supervisor(os.environ, log=lambda _: None)\n"
        "s.add('sleeper', [sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        "s.start()\n"
        f"open({str(pid_file)!r}, 'w').write(str(s.pids()[0]))\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    child = _read_pid(pid_file)
    assert psutil.pid_exists(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_gone([child], timeout=5) == []
