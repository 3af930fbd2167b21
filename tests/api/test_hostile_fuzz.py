"""Every route of the API, fed generated hostile input where it takes input: path ids,
query strings and JSON bodies that are nested deep, oversized, or full of NUL and control
characters. Signed in as a fan and as an admin, so the input reaches the code behind the
authentication. No answer is a 5xx, every refusal is problem+json, and nothing the buying
path owns changes (only the audit log and stored 4xx answers may grow: both are by design).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.routes import HTTPRoute

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.db import make_async_engine, make_sessionmaker
from booking.settings import Settings
from tests.factories import make_event, make_signed_in_fan
from tests.live_api import LiveApi

# Tables whose rows hostile input must never touch.
GUARDED = (
    "fans", "fan_sessions", "holds", "hold_items", "inventory_units", "orders", "order_items", "tickets",
    "payments", "refunds", "staff_keys", "events", "outbox",
)  # fmt: skip
NASTY_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40).map(lambda s: s + "\x00"),
    st.sampled_from(
        ["\x00", "a\x00b", "\x01\x02\x7f", "../../etc/passwd", "%00", "x" * 3_000, "\u202e", " "]
    ),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=31), min_size=1, max_size=8),
)
DEEP = st.integers(200, 3_000).map(lambda n: '{"a":' * n + "1" + "}" * n)
BODIES = st.one_of(
    DEEP,
    st.integers(2_000, 20_000).map(lambda n: "[" * n + "]" * n),
    st.dictionaries(st.sampled_from(["event_id", "seat_ids", "tier_id", "quantity", "email", "password",
                                     "token", "gate", "provider", "card_number", "queue", "reference"]),
                    st.one_of(NASTY_TEXT, st.integers(-(2**70), 2**70), st.lists(st.integers(-(2**70), 2**70),
                              max_size=5), st.none(), st.booleans()), max_size=6).map(json.dumps),
    st.text(max_size=200),
)  # fmt: skip


class Target:
    def __init__(self, method: str, template: str, params: dict[str, type], takes_body: bool) -> None:
        self.method, self.template, self.params, self.takes_body = method, template, params, takes_body

    def __repr__(self) -> str:
        return f"{self.method} {self.template}"


def _targets(live: LiveApi) -> list[Target]:
    assert live.app is not None
    found = []
    for route in live.app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format.startswith("/schema"):
            continue
        for handler in route.route_handlers:
            takes_body = "data" in handler.parsed_fn_signature.parameters
            params = {name: p.type for name, p in route.path_parameters.items()}
            for method in sorted(handler.http_methods - {"HEAD", "OPTIONS"}):
                # Without a path id, body or query to be hostile in, a request is only an
                # ordinary call (signing out, releasing expired holds): nothing to fuzz.
                if params or takes_body or method == "GET":
                    found.append(Target(method, route.path_format, params, takes_body))
    return found


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in GUARDED}  # type: ignore[index]


async def _setup(settings: Settings) -> tuple[str, str]:
    assert settings.database_url is not None
    engine = make_async_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            await make_event(session, seats=4, ga_capacity=2)
            _, token = await make_signed_in_fan(session)
            issued = await create_key(session, f"fuzz-admin-{uuid.uuid4().hex[:8]}", StaffRole.ADMIN)
            await session.commit()
            return token, issued.secret
    finally:
        await engine.dispose()


@pytest.fixture
def live(settings: Settings) -> Iterator[tuple[LiveApi, str, str]]:
    fan_token, staff_secret = asyncio.run(_setup(settings))
    api = LiveApi(settings)
    api.start()
    try:
        yield api, fan_token, staff_secret
    finally:
        api.stop()


def test_hostile_input_on_every_route_is_refused_cleanly_and_changes_nothing(
    live: tuple[LiveApi, str, str], settings: Settings
) -> None:
    api, fan_token, staff_secret = live
    assert settings.database_url is not None
    dsn = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    targets = _targets(api)
    assert len(targets) > 30
    before = _counts(dsn)

    @settings_for_fuzz
    @given(
        target=st.sampled_from(targets),
        ident=NASTY_TEXT,
        body=BODIES,
        query=st.dictionaries(
            st.sampled_from(["q", "limit", "cursor", "city", "queue", "action"]), NASTY_TEXT, max_size=2
        ),
    )
    def attack(target: Target, ident: str, body: str, query: dict[str, str]) -> None:
        path = target.template
        for name, kind in target.params.items():
            value = str(uuid.uuid4()) if kind is uuid.UUID and body else ident
            path = path.replace("{" + name + "}", quote(value, safe="") or "%00")
        secret = staff_secret if path.startswith("/staff") else fan_token
        headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex}
        kwargs: dict[str, Any] = {"params": query}
        if target.takes_body:
            kwargs.update(
                content=body.encode("utf-8", "surrogatepass"),
                headers={**headers, "Content-Type": "application/json"},
            )
        else:
            kwargs["headers"] = headers
        response = client.request(target.method, path, **kwargs)
        seen.add(response.status_code)
        assert response.status_code < 500, (target, path[:120], response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), (
                target,
                response.text[:200],
            )

    seen: set[int] = set()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        attack()
    assert _counts(dsn) == before
    # The input got past authentication to the code that judges it.
    assert {400, 404} <= seen, seen


settings_for_fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
