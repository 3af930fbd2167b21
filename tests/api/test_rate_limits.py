"""Rate limits and the sign-in back-off, over HTTP, on a real Redis.

Each test starts the API with rate limits on (the suite's default settings turn them off)
and reaches it as clients at chosen addresses: an ASGI transport whose peer is the address
given, as a server would see a connection from it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from api.openapi import RATELIMIT, RATELIMIT_POLICY
from api.problems import problem_type
from api.rate_limits import check_routes, client_address_of
from booking.accounts.models import Fan
from booking.holds.models import Hold
from booking.rate_limits import address_identity
from booking.settings import Settings, proxy_networks
from tests.api.conftest import PASSWORD
from tests.factories import SmallEvent, make_event, make_signed_in_fan

SERVICE_LIMIT = re.compile(r'^"(?P<policy>[a-z-]+)";r=0;t=(?P<t>\d+)$')


class Clients:
    """HTTP clients of one app, each at its own peer address."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self._made: list[httpx.AsyncClient] = []

    def __call__(self, address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        made = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self._made.append(made)
        return made

    async def aclose(self) -> None:
        for made in self._made:
            await made.aclose()


@asynccontextmanager
async def limited_api(settings: Settings, **limits: Any) -> AsyncIterator[Clients]:
    """The API with rate limits on (``limits`` overriding the defaults), and clients at any
    peer address. In-flight bound wide open: only the limits refuse here."""
    app = create_app(settings.model_copy(update={"rate_limits": True, "max_in_flight": 1000, **limits}))
    clients = Clients(app)
    # The lifespan on this loop, where the requests run too (a test client would run it on
    # a loop of its own).
    async with app.lifespan():
        try:
            yield clients
        finally:
            await clients.aclose()


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _ga(event: SmallEvent) -> dict[str, object]:
    return {"event_id": str(event.event_id), "tier_id": str(event.ga_tier_id), "quantity": 1}


def assert_refused(answer: httpx.Response, policy: str) -> int:
    """A 429 ``rate-limited`` by ``policy``, with its fields; returns its Retry-After."""
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["type"] == problem_type("rate-limited")
    assert body["policy"] == policy
    retry_after = int(answer.headers["retry-after"])
    assert retry_after >= 1
    assert body["retry_after"] == retry_after
    field = SERVICE_LIMIT.match(answer.headers[RATELIMIT])
    assert field is not None, answer.headers[RATELIMIT]
    assert field["policy"] == policy
    assert int(field["t"]) == retry_after
    assert f'"{policy}";q=' in answer.headers[RATELIMIT_POLICY]
    return retry_after


async def test_a_hundred_concurrent_holds_of_one_fan_let_exactly_five_through(
    settings: Settings, session: AsyncSession
) -> None:
    event = await make_event(session, seats=1, ga_capacity=200)
    fan_id, token = await make_signed_in_fan(session)
    fan = {"Authorization": f"Bearer {token}"}
    async with limited_api(
        settings, rate_limit_hold_per_fan="5/minute", rate_limit_hold_per_address="off"
    ) as client:
        api = client("203.0.113.10")
        # Signed in once, so the burst finds the fan in the process's cache, as a fan's
        # second request does, and no request waits for a pooled connection to learn who.
        assert (await api.get("/me", headers=fan)).status_code == 200
        answers = await asyncio.gather(
            *(api.post("/holds", json=_ga(event), headers={**fan, **_key()}) for _ in range(100))
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(201) == 5, statuses
    assert statuses.count(429) == 95, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert assert_refused(answer, "hold-per-fan") <= 60
        else:
            assert answer.headers[RATELIMIT_POLICY] == '"hold-per-fan";q=5;w=60'
            assert RATELIMIT not in answer.headers
    # A refusal changed nothing: the table holds exactly the five holds let through.
    held = await session.scalar(select(func.count()).select_from(Hold).where(Hold.fan_id == fan_id))
    assert held == 5


async def test_the_address_limit_counts_every_fan_behind_one_address(
    settings: Settings, session: AsyncSession
) -> None:
    event = await make_event(session, seats=1, ga_capacity=50)
    tokens = [(await make_signed_in_fan(session))[1] for _ in range(4)]
    async with limited_api(settings, rate_limit_hold_per_address="3/minute") as client:
        shared, elsewhere = client("198.51.100.7"), client("192.0.2.44")
        for token in tokens[:3]:
            answer = await shared.post(
                "/holds", json=_ga(event), headers={"Authorization": f"Bearer {token}", **_key()}
            )
            assert answer.status_code == 201, answer.text
            assert answer.headers[RATELIMIT_POLICY] == '"hold-per-address";q=3;w=60, "hold-per-fan";q=10;w=60'
        fourth = {"Authorization": f"Bearer {tokens[3]}"}
        assert_refused(
            await shared.post("/holds", json=_ga(event), headers={**fourth, **_key()}), "hold-per-address"
        )
        # The same fan from another address is a fresh count.
        assert (
            await elsewhere.post("/holds", json=_ga(event), headers={**fourth, **_key()})
        ).status_code == 201


async def test_sign_ups_are_limited_per_address(settings: Settings, session: AsyncSession) -> None:
    async with limited_api(settings) as client:  # the default: 5 an hour
        bot, neighbour = client("203.0.113.99"), client("203.0.113.100")
        emails = [f"bot-{n}-{uuid.uuid4().hex[:6]}@example.org" for n in range(6)]
        for email in emails[:5]:
            created = await bot.post("/fans", json={"email": email, "password": PASSWORD})
            assert created.status_code == 201, created.text
            assert created.headers[RATELIMIT_POLICY] == '"signup-per-address";q=5;w=3600'
        refused = await bot.post("/fans", json={"email": emails[5], "password": PASSWORD})
        assert 3000 < assert_refused(refused, "signup-per-address") <= 3600
        assert (
            await neighbour.post("/fans", json={"email": emails[5] + ".uk", "password": PASSWORD})
        ).status_code == 201
    # The refused sign-up made no account.
    assert await session.scalar(select(func.count()).select_from(Fan).where(Fan.email == emails[5])) == 0


async def test_renewals_and_checkouts_are_limited_per_fan(settings: Settings, session: AsyncSession) -> None:
    event = await make_event(session, seats=1, ga_capacity=10)
    _, token = await make_signed_in_fan(session)
    fan = {"Authorization": f"Bearer {token}"}
    async with limited_api(
        settings, rate_limit_renew_per_fan="1/minute", rate_limit_checkout_per_fan="1/minute"
    ) as client:
        api = client("203.0.113.20")
        hold = (await api.post("/holds", json=_ga(event), headers={**fan, **_key()})).json()["id"]
        assert (await api.post(f"/holds/{hold}/renew", headers=fan)).status_code == 200
        assert_refused(await api.post(f"/holds/{hold}/renew", headers=fan), "renew-per-fan")
        card = {"provider": "offline", "card_number": "12"}  # refused by the route: still counted
        assert (await api.post(f"/holds/{hold}/checkout", json=card, headers=fan)).status_code == 400
        assert_refused(await api.post(f"/holds/{hold}/checkout", json=card, headers=fan), "checkout-per-fan")


async def test_limits_off_leave_every_request_alone(settings: Settings, session: AsyncSession) -> None:
    event = await make_event(session, seats=1, ga_capacity=20)
    _, token = await make_signed_in_fan(session)
    fan = {"Authorization": f"Bearer {token}"}
    async with limited_api(settings, rate_limits=False, rate_limit_hold_per_fan="1/minute") as client:
        api = client("203.0.113.30")
        for _ in range(3):
            answer = await api.post("/holds", json=_ga(event), headers={**fan, **_key()})
            assert answer.status_code == 201
            assert RATELIMIT_POLICY not in answer.headers


# --- the sign-in back-off -----------------------------------------------------------------


async def _sign_in(api: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await api.post("/sessions", json={"email": email, "password": password})


def _backoff_wait(answer: httpx.Response) -> int:
    assert answer.status_code == 429, answer.text
    assert answer.json()["type"] == problem_type("login-backoff")
    return int(answer.headers["retry-after"])


BACKOFF = {
    "login_backoff_failures": 3,
    "login_backoff_seconds": 1,
    "login_backoff_max_seconds": 2,
    "rate_limit_login_per_address": "off",
    "rate_limit_login_per_account": "off",
}


async def _wait_out(answer: httpx.Response) -> None:
    await asyncio.sleep(_backoff_wait(answer) + 0.1)


async def test_the_back_off_engages_after_the_failures_grows_and_resets_on_success(
    settings: Settings,
) -> None:
    async with limited_api(settings, **BACKOFF) as client:
        api = client("203.0.113.40")
        email = f"fan-{uuid.uuid4().hex[:8]}@example.org"
        assert (await api.post("/fans", json={"email": email, "password": PASSWORD})).status_code == 201
        for _ in range(3):
            assert (await _sign_in(api, email, "wrong password!")).status_code == 401
        # Refused now, even with the right password: a guesser cannot tell it was right.
        first = await _sign_in(api, email, PASSWORD)
        assert _backoff_wait(first) == 1
        await _wait_out(first)
        # One more failure after the wait: a longer one (doubled), then capped.
        assert (await _sign_in(api, email, "wrong password!")).status_code == 401
        second = await _sign_in(api, email, PASSWORD)
        assert _backoff_wait(second) == 2
        await _wait_out(second)
        assert (await _sign_in(api, email, "wrong password!")).status_code == 401
        third = await _sign_in(api, email, PASSWORD)
        assert _backoff_wait(third) == 2
        await _wait_out(third)
        # A success clears the count: the next failures start from nothing.
        assert (await _sign_in(api, email, PASSWORD)).status_code == 201
        for _ in range(2):
            assert (await _sign_in(api, email, "wrong password!")).status_code == 401
        assert (await _sign_in(api, email, PASSWORD)).status_code == 201


async def test_an_unknown_email_gets_the_same_answers_as_an_account(settings: Settings) -> None:
    async with limited_api(settings, **BACKOFF) as client:
        known = f"fan-{uuid.uuid4().hex[:8]}@example.org"
        unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.org"
        seen: dict[str, list[tuple[int, str, str | None, str]]] = {}
        for number, email in enumerate((known, unknown)):
            api = client(f"203.0.113.{50 + number}")
            if email == known:
                assert (
                    await api.post("/fans", json={"email": email, "password": PASSWORD})
                ).status_code == 201
            answers = [await _sign_in(api, email, "wrong password!") for _ in range(5)]
            seen[email] = [
                (a.status_code, a.json()["type"], a.headers.get("retry-after"), a.json()["detail"])
                for a in answers
            ]
        assert seen[known] == seen[unknown]
        assert [status for status, *_ in seen[known]] == [401, 401, 401, 429, 429]


async def test_the_back_off_counts_failures_per_address_too(settings: Settings) -> None:
    async with limited_api(
        settings, **{**BACKOFF, "login_backoff_failures": 0, "login_backoff_address_failures": 3}
    ) as client:
        guesser, fan = client("198.51.100.60"), client("198.51.100.61")
        for n in range(3):
            assert (await _sign_in(guesser, f"guess-{n}@example.org", "wrong password!")).status_code == 401
        # Any email from that address waits now; from another address sign-in goes on.
        _backoff_wait(await _sign_in(guesser, "another@example.org", "wrong password!"))
        assert (await _sign_in(fan, "another@example.org", "wrong password!")).status_code == 401


async def test_a_burst_of_guesses_is_cut_off_at_the_threshold(settings: Settings) -> None:
    # Counted as each attempt starts: 20 at once cannot all pass a check none has failed yet.
    async with limited_api(
        settings, **{**BACKOFF, "login_backoff_seconds": 60, "login_backoff_max_seconds": 60}
    ) as client:
        api = client("203.0.113.70")
        email = f"target-{uuid.uuid4().hex[:8]}@example.org"
        answers = await asyncio.gather(*(_sign_in(api, email, f"guess number {n}") for n in range(20)))
    assert sorted(a.status_code for a in answers) == [401] * 3 + [429] * 17


async def test_sign_ins_are_limited_per_account(settings: Settings) -> None:
    async with limited_api(
        settings, rate_limit_login_per_account="2/minute", login_backoff_failures=0
    ) as client:
        email = f"fan-{uuid.uuid4().hex[:8]}@example.org"
        for n in range(2):
            answer = await _sign_in(client(f"192.0.2.{n + 1}"), email, "wrong password!")
            assert answer.status_code == 401
            assert (
                answer.headers[RATELIMIT_POLICY]
                == '"login-per-address";q=10;w=60, "login-per-account";q=2;w=60'
            )
        # From a third address: the email's own limit.
        assert_refused(await _sign_in(client("192.0.2.3"), email, PASSWORD), "login-per-account")


# --- the client address -------------------------------------------------------------------


def _scope(peer: str, *forwarded: str) -> dict[str, Any]:
    return {"client": (peer, 5000), "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        pytest.param("", "198.51.100.1", ["203.0.113.9"], "198.51.100.1", id="no proxy trusted: the peer"),
        pytest.param("10.0.0.0/8", "198.51.100.1", ["203.0.113.9"], "198.51.100.1", id="peer not a proxy"),
        pytest.param("10.0.0.0/8", "10.1.1.1", ["203.0.113.9"], "203.0.113.9", id="through one proxy"),
        pytest.param(
            "10.0.0.0/8",
            "10.1.1.1",
            ["6.6.6.6, 203.0.113.9, 10.2.2.2"],
            "203.0.113.9",
            id="client forged a hop",
        ),
        pytest.param(
            "10.0.0.0/8", "10.1.1.1", ["203.0.113.9", "10.3.3.3"], "203.0.113.9", id="two header lines"
        ),
        pytest.param("10.0.0.0/8", "10.1.1.1", ["10.2.2.2"], "10.2.2.2", id="all proxies: the farthest"),
        pytest.param(
            "10.0.0.0/8", "10.1.1.1", ["not-an-ip, 10.2.2.2"], "10.2.2.2", id="garbage ends the walk"
        ),
        pytest.param("10.0.0.0/8", "10.1.1.1", [], "10.1.1.1", id="no header"),
    ],
)
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    trusted: str, peer: str, forwarded: list[str], expected: str
) -> None:
    assert client_address_of(_scope(peer, *forwarded), proxy_networks(trusted)) == expected


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count(
    settings: Settings,
) -> None:
    async with limited_api(
        settings, trusted_proxies="10.0.0.0/8", rate_limit_signup_per_address="1/hour"
    ) as client:
        proxy, direct = client("10.0.0.5"), client("198.51.100.80")
        for visitor in ("203.0.113.1", "203.0.113.2"):
            email = f"{visitor}-{uuid.uuid4().hex[:6]}@example.org"
            created = await proxy.post(
                "/fans", json={"email": email, "password": PASSWORD}, headers={"X-Forwarded-For": visitor}
            )
            assert created.status_code == 201, created.text
        again = await proxy.post(
            "/fans",
            json={"email": f"again-{uuid.uuid4().hex[:6]}@example.org", "password": PASSWORD},
            headers={"X-Forwarded-For": "203.0.113.1"},
        )
        assert_refused(again, "signup-per-address")
        # A client that is not a proxy cannot pick its address with the header.
        for n in range(2):
            answer = await direct.post(
                "/fans",
                json={"email": f"direct-{n}-{uuid.uuid4().hex[:6]}@example.org", "password": PASSWORD},
                headers={"X-Forwarded-For": f"203.0.113.{100 + n}"},
            )
        assert_refused(answer, "signup-per-address")


def test_an_ipv6_client_is_counted_by_its_slash_64() -> None:
    assert address_identity("2001:db8:1:2:aaaa::1") == address_identity("2001:db8:1:2:bbbb::9")
    assert address_identity("2001:db8:1:3::1") != address_identity("2001:db8:1:2::1")
    assert address_identity("::ffff:203.0.113.5") == "203.0.113.5"
    assert address_identity("203.0.113.5") == "203.0.113.5"


def test_a_route_naming_no_group_fails_at_start(api: AsyncTestClient[Litestar]) -> None:
    from litestar import post

    @post("/typo", opt={"rate_limit": "holds"})
    async def typo() -> None:
        return None

    with pytest.raises(ValueError, match="holds"):
        check_routes(Litestar(route_handlers=[typo]).routes)
    check_routes(api.app.routes)  # the real app's names are all groups


def test_every_route_bots_abuse_is_limited(api: AsyncTestClient[Litestar]) -> None:
    expected = {
        ("POST", "/fans"): "signup",
        ("POST", "/sessions"): "login",
        ("POST", "/holds"): "hold",
        ("POST", "/holds/{hold_id}/renew"): "renew",
        ("POST", "/holds/{hold_id}/checkout"): "checkout",
        ("POST", "/events/{event_id}/queue"): "queue",
    }
    limited = {
        (method, route.path_format): handler.opt["rate_limit"]
        for route in api.app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        for method in handler.http_methods
        if "rate_limit" in handler.opt
    }
    assert limited == expected
