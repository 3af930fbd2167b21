"""The console in a real terminal: `boxoffice console` started in tmux against a live API,
driven by keys, its screen read back. Proves start-up and rendering outside the test harness
(real terminal size, colours, the installed entry point)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_api import LiveApi

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def session_name() -> Iterator[str]:
    name = f"boxoffice-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def _screen(name: str) -> str:
    return _tmux("capture-pane", "-p", "-t", name)


def _wait_for(name: str, text: str, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while True:
        screen = _screen(name)
        if text in screen:
            return screen
        assert time.monotonic() < deadline, f"{text!r} never appeared; the screen was:\n{screen}"
        time.sleep(0.2)


def test_the_console_starts_renders_and_quits_in_a_real_terminal(
    live_api: LiveApi, admin_key: str, session_name: str, tmp_path: Path
) -> None:
    boxoffice = Path(sys.executable).with_name("boxoffice")
    command = f"{boxoffice} console --api {live_api.url} --refresh 0.5; echo CONSOLE-EXITED-$?; sleep 30"
    env = {
        **os.environ,
        "BOXOFFICE_STAFF_KEY": admin_key,
        "BOXOFFICE_DATA_DIR": str(tmp_path),
        "TERM": "xterm-256color",
    }
    _tmux(
        "new-session",
        "-d",
        "-s",
        session_name,
        "-x",
        "160",
        "-y",
        "48",
        *[f"-e{k}={v}" for k, v in env.items() if k.startswith(("BOXOFFICE_", "TERM"))],
        command,
    )

    dashboard = _wait_for(session_name, "Job queues")
    assert "Events" in dashboard
    assert "Dashboard" in dashboard  # the footer names the screens' keys
    _wait_for(session_name, "Holds expiring within a minute")

    _tmux("send-keys", "-t", session_name, "b")
    _wait_for(session_name, "Pick an event and press Enter")
    _tmux("send-keys", "-t", session_name, "h")
    _wait_for(session_name, "hold id, event id or fan email")
    _tmux("send-keys", "-t", session_name, "o")
    _wait_for(session_name, "Orders stuck in payment")

    _tmux("send-keys", "-t", session_name, "q")
    _wait_for(session_name, "CONSOLE-EXITED-0")
