"""A bounded burst of fans buying over HTTP, as a careful client would while something fails.

Each fan holds GA places and pays with the offline provider's test card. A 503 or 429 is
retried after its ``Retry-After`` (capped, so a test stays short); a lost answer (timeout,
reset, refused connection) is retried with the same Idempotency-Key for a hold and on the
same hold for checkout, both of which the API promises are safe. A fan whose last answer was
lost is asked again by ``settle`` once the fault is over, so what the fans were told can be
compared with the database: the order a fan was told about is the one that exists.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

CARD = "4242424242424242"
MAX_WAIT = 1.0  # cap on an honoured Retry-After, to keep a burst short


@dataclass
class Fan:
    token: str
    seat_ids: list[int] | None = None  # these seats, else GA places of the burst's tier
    hold_id: str | None = None
    order_id: str | None = None
    unsettled: bool = False  # the last checkout's answer was lost


@dataclass
class Burst:
    """What the fans saw: statuses (or transport errors) per step, and the orders they hold."""

    base_url: str
    event_id: uuid.UUID
    tier_id: uuid.UUID
    quantity: int = 1
    request_timeout: float = 5.0
    answers: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0

    def told_confirmed(self, fans: list[Fan]) -> set[str]:
        return {fan.order_id for fan in fans if fan.order_id is not None}

    def _note(self, step: str, outcome: str, started: float) -> None:
        self.answers[f"{step} {outcome}"] += 1
        self.slowest = max(self.slowest, time.monotonic() - started)

    async def _send(
        self,
        client: httpx.AsyncClient,
        step: str,
        path: str,
        body: dict[str, object],
        headers: dict[str, str],
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await client.post(path, json=body, headers=headers, timeout=self.request_timeout)
        except httpx.TransportError as error:
            self._note(step, type(error).__name__, started)
            return None
        code = ""
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            code = " " + str(response.json().get("type", "")).rsplit("/", 1)[-1]
        self._note(step, f"{response.status_code}{code}", started)
        return response

    @staticmethod
    async def _back_off(response: httpx.Response | None) -> None:
        seconds = 0.2
        if response is not None:
            try:
                seconds = float(response.headers.get("retry-after", "0.2"))
            except ValueError:
                seconds = 0.2
        await asyncio.sleep(min(seconds, MAX_WAIT))

    async def buy(self, client: httpx.AsyncClient, fan: Fan, until: float) -> None:
        """Hold, then pay, until the fan has an order, is told no for good, or ``until``."""
        auth = {"Authorization": f"Bearer {fan.token}"}
        key = uuid.uuid4().hex
        while fan.hold_id is None and time.monotonic() < until:
            wanted: dict[str, object] = (
                {"seat_ids": fan.seat_ids}
                if fan.seat_ids
                else {"tier_id": str(self.tier_id), "quantity": self.quantity}
            )
            held = await self._send(
                client,
                "hold",
                "/holds",
                {"event_id": str(self.event_id), **wanted},
                {**auth, "Idempotency-Key": key},
            )
            if held is not None and held.status_code == 201:
                fan.hold_id = str(held.json()["id"])
            elif held is not None and held.status_code not in (429, 503):
                return
            else:
                await self._back_off(held)
        while fan.hold_id is not None and fan.order_id is None and time.monotonic() < until:
            if await self._checkout(client, fan) is not None:
                return

    async def _checkout(self, client: httpx.AsyncClient, fan: Fan) -> bool | None:
        """One checkout attempt: True paid, False refused for good, None to try again."""
        paid = await self._send(
            client,
            "checkout",
            f"/holds/{fan.hold_id}/checkout",
            {"provider": "offline", "card_number": CARD},
            {"Authorization": f"Bearer {fan.token}"},
        )
        fan.unsettled = paid is None or paid.status_code in (429, 503)
        if paid is not None and paid.status_code == 200 and paid.json().get("status") == "confirmed":
            fan.order_id = str(paid.json()["order_id"])
            return True
        if paid is not None and paid.status_code not in (429, 503):
            fan.unsettled = False
            return False
        await self._back_off(paid)
        return None

    async def run(self, fans: list[Fan], seconds: float, *, spread: float = 0.0) -> None:
        """Every fan buys, all at once or arriving evenly over ``spread`` seconds (so that a
        fault injected meanwhile meets fans at every step), until ``seconds`` are over."""
        until = time.monotonic() + seconds

        async def arrive(client: httpx.AsyncClient, n: int, fan: Fan) -> None:
            await asyncio.sleep(spread * n / len(fans))
            await self.buy(client, fan, until)

        async with httpx.AsyncClient(
            base_url=self.base_url, limits=httpx.Limits(max_connections=len(fans) + 5)
        ) as client:
            await asyncio.gather(*(arrive(client, n, fan) for n, fan in enumerate(fans)))

    async def settle(self, fans: list[Fan], seconds: float = 30.0) -> None:
        """Ask again for every fan whose last checkout answer was lost or deferred, until each
        has a definite answer (or ``seconds`` pass)."""
        until = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            for fan in fans:
                while fan.unsettled and fan.order_id is None and time.monotonic() < until:
                    await self._checkout(client, fan)
