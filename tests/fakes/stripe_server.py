"""The fake Stripe served over real HTTP on loopback, for tests where the network between us
and Stripe is part of what fails.

``FakeStripe`` normally sits behind the SDK's HTTP-client boundary, so no socket is ever
opened. Here the SDK keeps its own HTTPX client (connection pool, timeouts, keep-alive) and
reaches the fake through ``api_base``, which lets a fault proxy stand between the two.

The fake is not thread-safe and the server answers from its own thread: every call into the
fake, from the server or from the test (``confirm``, ``take_webhooks``, ``call``), holds one
lock.

Usage::

    with StripeServer(FakeStripe()) as served:
        gateway = StripeGateway(served.fake.api_key, api_base=served.url)
        ...
        served.confirm(ref)
        hooks = served.take_webhooks()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import uvicorn
from stripe import APIConnectionError

from tests.conftest import free_port
from tests.fakes.stripe import CARD_SUCCESS, FakeStripe, FakeWebhook

T = TypeVar("T")


class StripeServer:
    """``fake`` answering HTTP on ``url`` (``http://127.0.0.1:<free port>``) while started."""

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- what a test asks of the fake, under the lock --------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.lock:
            return fn(*args, **kwargs)

    def confirm(self, intent_id: str, *, card: str = CARD_SUCCESS) -> dict[str, Any]:
        return self.call(self.fake.confirm, intent_id, card=card)

    def take_webhooks(self) -> list[FakeWebhook]:
        return self.call(self.fake.take_webhooks)

    # -- the server -------------------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        url = self.url + scope["path"] + (f"?{query}" if query else "")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            with self.lock:
                payload, status, answer_headers = self.fake.handle(scope["method"], url, headers, body)
        except APIConnectionError:
            # An injected timeout: the answer never comes, until the client gives up.
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in answer_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def start(self) -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                self._app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                # The process's logging is ours (booking.logs); uvicorn must not replace it.
                log_config=None,
                lifespan="off",
                interface="asgi3",
                # A request left unanswered must not keep a stopping test waiting.
                timeout_graceful_shutdown=1,
                # Longer than any client keeps an idle connection: a request sent on one the
                # server is closing that moment would fail for reasons no test is about.
                timeout_keep_alive=60,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True, name="fake-stripe")
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline, "the fake Stripe server did not start"
            assert thread.is_alive(), "the fake Stripe server stopped while starting"
            time.sleep(0.02)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> StripeServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["StripeServer"]
