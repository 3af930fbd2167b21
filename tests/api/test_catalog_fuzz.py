"""The catalog-administration routes fuzzed by schemathesis with an admin key, against the
running API (uvicorn on loopback) and a real event: no input answers 5xx or breaks the schema
it documents. (The whole-schema fuzz, tests/api/test_schemathesis.py, calls with a fan's
token, which these routes refuse before reading anything.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.catalog import admin
from booking.db import make_async_engine, make_sessionmaker
from booking.holds.policy import HoldPolicy
from booking.settings import Settings
from tests.catalog_data import make_arena, new_event
from tests.live_api import LiveApi

EXAMPLES = 30


async def _prepare(url: str) -> tuple[str, uuid.UUID]:
    engine = make_async_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            arena = await make_arena(session, sections=2, rows=2, seats_per_row=5, standing=20)
            event_id = await admin.create_event(session, new_event(arena), limits=HoldPolicy())
            issued = await create_key(session, "fuzzer", StaffRole.ADMIN)
            await session.commit()
            return issued.secret, event_id
    finally:
        await engine.dispose()


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, str, uuid.UUID]]:
    assert settings.database_url is not None
    key, event_id = asyncio.run(_prepare(settings.database_url))
    api = LiveApi(settings)
    api.start()
    try:
        yield api.url, key, event_id
    finally:
        api.stop()


def test_no_catalog_operation_answers_5xx_or_breaks_its_schema(served: tuple[str, str, uuid.UUID]) -> None:
    base, key, event_id = served
    schema = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
        if op.path.startswith("/staff/catalog")
    ]
    assert len(operations) == 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            # Half the cases against the real event, so the bodies reach the service.
            if case.path_parameters and "event_id" in case.path_parameters and hash(str(case.body)) % 2 == 0:
                case.path_parameters["event_id"] = str(event_id)
            response = case.call(
                base_url=base,
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
                timeout=30,
            )
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
            )

        check()
