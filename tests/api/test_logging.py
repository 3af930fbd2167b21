"""The API's logs over a whole fan journey, in JSON: every line of a request carries that
request's id (the client's when sane, else a fresh one, always the one the response names),
the fan, hold and order are named once known, and no secret is ever written."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from booking.settings import Settings
from tests.api.conftest import PASSWORD
from tests.factories import SmallEvent, make_event

CARD = "4242 4242 4242 4242"
STRIPE_KEY = "sk_test_" + secrets.token_hex(12)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(12)


class Logs:
    """The JSON lines the process wrote to stderr since the last ``take``."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.everything: list[str] = []

    def take(self) -> list[dict[str, Any]]:
        text = self.capfd.readouterr().err
        raw = [line for line in text.splitlines() if line.strip()]
        self.everything.extend(raw)
        lines = [json.loads(line) for line in raw]  # every line is JSON, library lines too
        for line in lines:
            assert {"timestamp", "level", "logger", "event"} <= line.keys(), line
        return lines


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    configured = settings.model_copy(
        update={
            "log_format": "json",
            "stripe_secret_key": SecretStr(STRIPE_KEY),
            "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
        }
    )
    async with AsyncTestClient(app=create_app(configured)) as api:
        yield api


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=4)


def request_lines(logs: Logs, response: httpx.Response) -> list[dict[str, Any]]:
    """The request's lines, after checking that each one names the id the response gives."""
    request_id = response.headers["x-request-id"]
    lines = logs.take()
    assert all(line.get("request_id") == request_id for line in lines), (request_id, lines)
    return lines


def events(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["event"]: line for line in lines}


async def test_a_fan_journey_is_logged_by_request_with_no_secret(
    client: AsyncTestClient[Litestar], event: SmallEvent, capfd: pytest.CaptureFixture[str]
) -> None:
    logs = Logs(capfd)
    logs.take()  # start-up
    email = f"fan-{uuid.uuid4().hex[:8]}@example.org"

    # Sent by the client: kept.
    created = await client.post(
        "/fans", json={"email": email, "password": PASSWORD}, headers={"X-Request-ID": "signup-1"}
    )
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == "signup-1"
    fan_id = created.json()["id"]
    assert events(request_lines(logs, created))["fan registered"]["fan_id"] == fan_id

    # Not sent: one is made, 32 hex digits.
    signed_in = await client.post("/sessions", json={"email": email, "password": PASSWORD})
    assert signed_in.status_code == 201, signed_in.text
    generated = signed_in.headers["x-request-id"]
    assert len(generated) == 32
    int(generated, 16)
    assert events(request_lines(logs, signed_in))["fan signed in"]["fan_id"] == fan_id
    token = signed_in.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}

    hold = await client.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": event.seat_ids[:2]},
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex, "X-Request-ID": "lb:7f3a.hold-2"},
    )
    assert hold.status_code == 201, hold.text
    assert hold.headers["x-request-id"] == "lb:7f3a.hold-2"
    hold_id = hold.json()["id"]
    created_line = events(request_lines(logs, hold))["hold created"]
    assert created_line["level"] == "info"
    # The fan, bound by the authentication dependency, reaches the route's line.
    assert (created_line["fan_id"], created_line["hold_id"]) == (fan_id, hold_id)

    paid = await client.post(
        f"/holds/{hold_id}/checkout", json={"provider": "offline", "card_number": CARD}, headers=auth
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "confirmed"
    order_id = paid.json()["order_id"]
    checkout = events(request_lines(logs, paid))
    assert checkout["checkout started"]["hold_id"] == hold_id
    confirmed = checkout["order confirmed"]
    assert (confirmed["fan_id"], confirmed["hold_id"], confirmed["order_id"]) == (fan_id, hold_id, order_id)

    order = await client.get(f"/orders/{order_id}", headers={**auth, "X-Request-ID": "read-order"})
    assert order.status_code == 200
    assert order.headers["x-request-id"] == "read-order"
    request_lines(logs, order)

    # Errors carry the id too: problem+json from a route, and from the router (no route).
    refused = await client.get(f"/orders/{order_id}", headers={"Authorization": "Bearer bofan_nope"})
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    request_lines(logs, refused)
    unknown = await client.get("/no/such/path", headers={"X-Request-ID": "lost-1"})
    assert unknown.status_code == 404
    assert unknown.headers["x-request-id"] == "lost-1"
    request_lines(logs, unknown)

    written = "\n".join(logs.everything)
    assert "fan registered" in written  # the capture did see the journey
    for secret in (PASSWORD, token, CARD, CARD.replace(" ", ""), STRIPE_KEY, WEBHOOK_SECRET):
        assert secret not in written


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "has spaces",
        'quote"d',
        "semi;colon",
        "x" * 129,
        "ünïcode",
        "<script>",
    ],
)
async def test_a_malformed_request_id_is_replaced_not_echoed(
    client: AsyncTestClient[Litestar], sent: str, capfd: pytest.CaptureFixture[str]
) -> None:
    logs = Logs(capfd)
    logs.take()
    response = await client.post(
        "/sessions",
        json={"email": "nobody@example.org", "password": "wrong password"},
        headers={"X-Request-ID": sent.encode()},
    )
    assert response.status_code == 401  # the request is served, not refused for its id
    replaced = response.headers["x-request-id"]
    assert replaced != sent
    assert len(replaced) == 32
    int(replaced, 16)
    request_lines(logs, response)


async def test_the_longest_sane_request_id_is_kept(client: AsyncTestClient[Litestar]) -> None:
    sent = "A-z0.9_:" * 16  # 128 characters, every kind allowed
    response = await client.get("/health", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] == sent


async def test_the_in_flight_bounds_503_carries_a_request_id(settings: Settings) -> None:
    """A request stuck reading its body holds the only place; the next is refused with 503,
    which the request id still reaches."""
    app = create_app(settings.model_copy(update={"max_in_flight": 1, "log_format": "json"}))
    async with AsyncTestClient(app=app) as client:
        body_arrives = asyncio.Event()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await body_arrives.wait()
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/fans",
            "raw_path": b"/fans",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        stuck = asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]
        for _ in range(100):  # until the stuck request holds its place
            refused = await client.get("/events", headers={"X-Request-ID": "refused-1"})
            if refused.status_code == 503:
                break
            await asyncio.sleep(0.01)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-request-id"] == "refused-1"
        body_arrives.set()
        await stuck
        start = next(m for m in sent if m["type"] == "http.response.start")
        assert dict(start["headers"])[b"x-request-id"]
