"""Rate limits while Valkey is frozen or gone, and after it is back.

Holds, and every other limit but sign-up's, fail open: the sale goes on, decided in
PostgreSQL. Sign-up fails closed (503 with Retry-After): accounts are what a bot multiplies.
The sign-in back-off is skipped. An outage costs Redis's timeout once per breaker cool-down,
not once per request: the frozen server counts the connections it was sent while stopped,
and the whole outage's requests make at most the first one's (a command on a pooled
connection, then one retry on a fresh one). Once Redis is back the limits count again.

The app reaches this Valkey by a valkey:// URL, as an operator may write it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.openapi import RETRY_AFTER
from api.problems import problem_type
from booking.accounts.models import Fan
from booking.redis_client import Breaker, sync_client
from booking.settings import Settings
from console.stack import EmbeddedValkey
from tests.api.conftest import PASSWORD
from tests.api.test_rate_limits import _ga, _key, assert_refused, limited_api
from tests.factories import make_event, make_signed_in_fan

pytestmark = pytest.mark.slow


def _connections_received(url: str) -> int:
    client = sync_client(url)
    try:
        return int(client.info("stats")["total_connections_received"])  # type: ignore[index]
    finally:
        client.close()


@pytest.mark.parametrize("outage", ["frozen", "killed"])
async def test_with_redis_away_the_sale_goes_on_sign_ups_wait_and_limits_come_back(
    settings: Settings, session: AsyncSession, own_valkey: EmbeddedValkey, outage: str
) -> None:
    assert own_valkey.port is not None
    assert own_valkey.pid is not None
    url = f"valkey://127.0.0.1:{own_valkey.port}/0"
    event = await make_event(session, seats=1, ga_capacity=50)
    fans = [{"Authorization": f"Bearer {(await make_signed_in_fan(session))[1]}"} for _ in range(2)]
    async with limited_api(
        settings.model_copy(update={"redis_url": url}), rate_limit_hold_per_fan="3/minute"
    ) as client:
        api = client("203.0.113.5")
        email = f"fan-{uuid.uuid4().hex[:8]}@example.org"
        assert (await api.post("/fans", json={"email": email, "password": PASSWORD})).status_code == 201
        for _ in range(3):
            assert (
                await api.post("/holds", json=_ga(event), headers={**fans[0], **_key()})
            ).status_code == 201
        assert_refused(
            await api.post("/holds", json=_ga(event), headers={**fans[0], **_key()}), "hold-per-fan"
        )

        breaker: Breaker = client.app.state.redis_breaker
        # One trial for the whole outage, however long the requests below take.
        breaker.cool_down = 3600
        received = _connections_received(url)
        if outage == "frozen":
            os.kill(own_valkey.pid, signal.SIGSTOP)
        else:
            os.kill(own_valkey.pid, signal.SIGKILL)
        try:
            # Fail open: the fan over the limit holds again (the ticket cap still holds in
            # PostgreSQL), every answer a clean one.
            for _ in range(4):
                held = await api.post("/holds", json=_ga(event), headers={**fans[0], **_key()})
                assert held.status_code == 201, held.text
            # Fail closed: no account is made, and the fan is told when to come back.
            refused = await api.post("/fans", json={"email": "x" + email, "password": PASSWORD})
            assert refused.status_code == 503, refused.text
            assert refused.json()["type"] == problem_type("unavailable")
            assert int(refused.headers[RETRY_AFTER]) >= 1
            # The back-off is skipped: failures are not counted, sign-in works.
            for _ in range(6):
                assert (
                    await api.post("/sessions", json={"email": email, "password": "wrong one!"})
                ).status_code == 401
            assert (
                await api.post("/sessions", json={"email": email, "password": PASSWORD})
            ).status_code == 201
            assert breaker.is_open
        finally:
            if outage == "frozen":
                os.kill(own_valkey.pid, signal.SIGCONT)
            else:
                own_valkey.restart()
        if outage == "frozen":
            # The stopped server's kernel took the connections the API opened meanwhile;
            # resumed, it accepts them all. Twelve requests: one timed-out trial.
            await asyncio.sleep(0.3)
            assert _connections_received(url) - received <= 2 + 1  # + this look's own

        # The cool-down is over: the next request tries Redis again, and it counts again.
        breaker.open_until = time.monotonic()
        statuses = [
            (await api.post("/holds", json=_ga(event), headers={**fans[1], **_key()})).status_code
            for _ in range(4)
        ]
        assert statuses == [201, 201, 201, 429]
        assert not breaker.is_open
        assert (await api.post("/fans", json={"email": "y" + email, "password": PASSWORD})).status_code == 201
    assert await session.scalar(select(func.count()).select_from(Fan).where(Fan.email == "x" + email)) == 0
