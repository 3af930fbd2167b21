"""A real API on loopback: uvicorn in a thread, on the test's database and Redis, that a
test can stop and start again on the same port; and the app wired to the Stripe fake."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator

import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from api.app import create_app
from booking.payments.models import PaymentProvider
from booking.payments.stripe_gateway import StripeGateway
from booking.settings import Settings
from tests.conftest import free_port
from tests.fakes.stripe import FakeStripe


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
                # The process's logging is ours (booking.logs); uvicorn must not replace it.
                log_config=None,
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


def with_stripe(settings: Settings, fake: FakeStripe) -> Settings:
    """``settings`` with the fake's Stripe keys: the app then offers Stripe."""
    return settings.model_copy(
        update={
            "stripe_secret_key": SecretStr(fake.api_key),
            "stripe_webhook_secret": SecretStr(fake.webhook_secret),
        }
    )


async def use_fake_stripe(app: Litestar, fake: FakeStripe) -> None:
    """Point a started app's Stripe gateway at ``fake`` (in process, no network)."""
    gateways = app.state.gateways
    await gateways.aclose()
    gateways.by_provider[PaymentProvider.STRIPE] = StripeGateway(fake.api_key, http_client=fake.http_client)


@contextlib.asynccontextmanager
async def stripe_api_client(settings: Settings, fake: FakeStripe) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app configured for Stripe, its Stripe gateway talking to ``fake``, in a test
    client (one process, no network)."""
    async with AsyncTestClient(app=create_app(with_stripe(settings, fake))) as client:
        await use_fake_stripe(client.app, fake)
        yield client


@contextlib.asynccontextmanager
async def live_api_with_stripe(settings: Settings, fake: FakeStripe) -> AsyncIterator[LiveApi]:
    """A real API on loopback (the in-process test client runs one request at a time), with
    Stripe's servers replaced by ``fake``."""
    live = LiveApi(with_stripe(settings, fake))
    live.start()
    assert live.app is not None
    live.app.state.gateways.by_provider[PaymentProvider.STRIPE] = StripeGateway(
        fake.api_key, http_client=fake.http_client
    )
    try:
        yield live
    finally:
        live.stop()
