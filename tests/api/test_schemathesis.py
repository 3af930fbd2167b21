"""The whole OpenAPI schema, fuzzed by schemathesis against the running API (uvicorn on
loopback, the demo loaded, a signed-in fan): no operation answers 5xx, and no answer breaks
the schema it documents."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from api.app import create_app
from booking.catalog.demo import load_demo
from booking.db import make_async_engine, make_sessionmaker
from booking.settings import Settings
from tests.conftest import free_port

EXAMPLES = 25
PASSWORD = "correct horse battery"


async def _load_demo(url: str) -> None:
    engine = make_async_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            await load_demo(session)
    finally:
        await engine.dispose()


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
    assert settings.database_url is not None
    asyncio.run(_load_demo(settings.database_url))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _token(base: str, email: str) -> str:
    response = httpx.post(f"{base}/sessions", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["token"])


def test_no_operation_answers_5xx_or_breaks_its_schema(live_api: str) -> None:
    email = f"fuzz-{uuid.uuid4().hex[:8]}@example.org"
    httpx.post(f"{live_api}/fans", json={"email": email, "password": PASSWORD}).raise_for_status()
    schema = schemathesis.openapi.from_url(f"{live_api}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    auth: list[dict[str, str]] = [{}]
    for operation in operations:
        # A fresh session per operation: the sign-out operations revoke theirs.
        auth[0] = {"Authorization": f"Bearer {_token(live_api, email)}"}

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=live_api, headers={**auth[0], "Idempotency-Key": uuid.uuid4().hex}, timeout=30
            )
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
            )

        check()
