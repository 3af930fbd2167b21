from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from console.stack import wait_gone
from console.supervisor import Supervisor

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


def _poll_for(supervisor: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.poll()
        time.sleep(0.05)


def test_a_crash_looping_child_is_restarted_with_growing_back_off_and_never_given_up() -> None:
    lines: list[str] = []
    supervisor = Supervisor(os.environ, window=60, max_delay=1.0, log=lines.append)
    supervisor.add("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor.add("steady", [sys.executable, "-c", "import time; time.sleep(300)"])
    supervisor.start()
    first, steady = supervisor.pids()
    _poll_for(supervisor, 8)
    restarts = [line for line in lines if line.startswith("crasher exited with code 3")]
    # 0.5 s, 1 s, then 1 s each (the cap): more than five restarts in eight seconds, and
    # the steady child untouched throughout.
    assert len(restarts) >= 5, lines
    assert "restarting in 0.5s" in restarts[0]
    assert "restarting in 1.0s" in restarts[-1]
    assert supervisor.pids()[0] != first
    assert supervisor.pids()[1] == steady
    assert psutil.pid_exists(steady)
    supervisor.stop(timeout=1)


def test_a_dead_childs_leftover_processes_are_killed_before_it_is_restarted(tmp_path: Path) -> None:
    # The child forks a grandchild (as the worker forks its ticker) and dies at once; the
    # grandchild, left in the child's process group, must not outlive the restart.
    script = (
        "import subprocess, sys\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(tmp_path / 'grandchild')!r}, 'w').write(str(g.pid))\n"
    )
    supervisor = Supervisor(os.environ, log=lambda _: None)
    supervisor.add("forker", [sys.executable, "-c", script])
    supervisor.start()
    grandchild = _read_pid(tmp_path / "grandchild")
    _poll_for(supervisor, 1.5)
    assert wait_gone([grandchild], timeout=5) == []
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
