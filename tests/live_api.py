"""A real API on loopback: uvicorn in a thread, on the test's database and Redis, that a
test can stop and start again on the same port."""

from __future__ import annotations

import threading
import time

import uvicorn
from litestar import Litestar

from api.app import create_app
from booking.settings import Settings
from tests.conftest import free_port


class LiveApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app: Litestar | None = None

    def start(self) -> None:
        self.app = create_app(self.settings)
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the API did not start"
            assert thread.is_alive(), "the API stopped while starting"
            time.sleep(0.05)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = self._thread = None
