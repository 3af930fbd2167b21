"""Idempotency keys (Stripe's semantics), stored in PostgreSQL beside the data they protect."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import errors as pg_errors
from sqlalchemy import (
    BigInteger,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default
from booking.errors import BookingError, IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRequest
from booking.sqltext import HotStatement
from booking.text import storable

KEY_LIFETIME = dt.timedelta(hours=24)
PATH_LENGTH = 500
# Where an entry point keeps the session a request under an Idempotency-Key runs in, so that
# everything the request does (its authentication included) uses that one connection.
IDEMPOTENT_SESSION = "boxoffice.db_session"


class IdempotencyKey(Base):
    """One row per (caller, key), holding the response the first request got.

    A row becomes visible only when the request's work commits, in the same transaction, so
    a committed row always has its response; a request that dies leaves no row behind.
    ``request_hash`` tells a replay from a reuse of the key with another request.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(120))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(PATH_LENGTH))
    request_hash: Mapped[str] = mapped_column(String(64))
    # Null only inside the transaction that is running the request.
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = now_default()
    expires_at: Mapped[dt.datetime] = mapped_column(
        server_default=text("now() + interval '24 hours'"), index=True
    )


KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    response: StoredResponse
    replayed: bool


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


_LOOK = HotStatement(
    "SELECT pg_try_advisory_xact_lock(hashtextextended(:lock, 0)),"
    " k.request_hash, k.response_status, k.response_headers, k.response_body, k.expires_at > now()"
    " FROM (SELECT 1) AS one LEFT JOIN idempotency_keys k ON k.scope = :scope AND k.key = :key"
)
# Written with the work, in its transaction. A row past its 24 hours but not yet pruned is
# taken over; a live one means another request stored its answer first: nothing is returned.
_STORE = HotStatement(
    "INSERT INTO idempotency_keys AS k (scope, key, method, path, request_hash, response_status,"
    " response_headers, response_body, created_at, expires_at)"
    " VALUES (:scope, :key, :method, :path, :hash, :status, CAST(:headers AS jsonb), :body, now(),"
    " now() + :lifetime)"
    " ON CONFLICT (scope, key) DO UPDATE SET method = excluded.method, path = excluded.path,"
    " request_hash = excluded.request_hash, response_status = excluded.response_status,"
    " response_headers = excluded.response_headers, response_body = excluded.response_body,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at"
    " WHERE k.expires_at <= now()"
    " RETURNING k.id"
)


@dataclass(frozen=True)
class _Key:
    scope: str
    key: str
    method: str
    path: str
    fingerprint: str

    def params(self) -> dict[str, Any]:
        return {"lock": f"idempotency:{self.scope}:{self.key}", "scope": self.scope, "key": self.key}


async def _look(session: AsyncSession, key: _Key) -> StoredResponse | None:
    """Take the key's lock for the caller's transaction and return the response stored
    for it, if any (None: the key is free, and ours until the transaction ends).

    The lock is transaction-scoped and taken without waiting: a duplicate that arrives while
    the first request runs is answered at once, without holding a connection for it.

    Raises:
        IdempotencyKeyReused: the key was used for a different request.
        IdempotencyKeyInProgress: a request with this key is running right now.
    """
    try:
        ((got, stored_hash, status, headers, body, live),) = await _LOOK.rows(session, key.params())
    except DBAPIError as error:
        if isinstance(error.orig, pg_errors.LockNotAvailable):
            raise IdempotencyKeyInProgress("Retry after the first request has finished.") from None
        raise
    if not got:
        raise IdempotencyKeyInProgress("Retry after the first request has finished.")
    if stored_hash is None or not live:
        return None  # never used, or past its 24 hours: the key is free again
    if stored_hash != key.fingerprint:
        raise IdempotencyKeyReused("Use a new key for a different request.")
    assert status is not None, "a committed key always has its response"
    return StoredResponse(status, body or b"", dict(headers))


async def _store(session: AsyncSession, key: _Key, response: StoredResponse) -> bool:
    """Record ``response`` as the key's answer in the caller's transaction. False when
    another request's answer is already stored (it committed after our look began)."""
    rows = await _STORE.rows(
        session,
        {
            **key.params(),
            "method": key.method,
            "path": key.path,
            "hash": key.fingerprint,
            "status": response.status,
            "headers": json.dumps(response.headers),
            "body": response.body,
            "lifetime": KEY_LIFETIME,
        },
    )
    return bool(rows)


async def _stored_after_all(sessions: async_sessionmaker[AsyncSession], key: _Key) -> Outcome:
    """The answer another request stored for the key while ours ran (ours was rolled back)."""
    async with sessions() as session:
        found = await _look(session, key)
        await session.commit()
    if found is None:
        raise IdempotencyKeyInProgress("Retry after the first request has finished.")
    return Outcome(found, replayed=True)


async def run_once(
    sessions: async_sessionmaker[AsyncSession],
    *,
    scope: str,
    key: str,
    method: str,
    path: str,
    body: bytes,
    operation: Callable[[AsyncSession], Awaitable[StoredResponse]],
    render_error: Callable[[BookingError], StoredResponse],
) -> Outcome:
    """Run ``operation`` at most once per (``scope``, ``key``) and the same request.

    The key's row, the operation's work and the stored response are one transaction: either
    all commit or none does, so a crash at any point leaves the key free and nothing done, and
    a retry runs the request afresh. A success costs two statements besides the work: the
    look (which takes the key's lock) and the store.

    A BookingError the operation raises, or a 4xx response it returns, is the request's
    answer too, but its work must not land: the transaction is rolled back and the answer
    stored in a transaction of its own (with the key's lock taken again), then replayed like
    any other. A 5xx (or any other exception) is not the request's answer: everything rolls
    back and nothing is stored, so a retry runs again.

    Raises:
        InvalidRequest: the key is empty, too long or not printable ASCII.
        IdempotencyKeyReused, IdempotencyKeyInProgress: see ``_look``.
    """
    if not KEY_PATTERN.match(key):
        raise InvalidRequest("An Idempotency-Key is 1 to 255 printable ASCII characters.")
    # The whole path is in the fingerprint (what a replay must match); the stored copy is
    # only for people reading the table, so anything a client put in it still fits.
    taken = _Key(scope, key, method, storable(path, PATH_LENGTH), request_fingerprint(method, path, body))
    async with sessions() as session:
        stored = await _look(session, taken)
        if stored is not None:
            await session.commit()
            return Outcome(stored, replayed=True)
        try:
            response = await operation(session)
        except BookingError as error:
            response = render_error(error)
        if response.status >= 500:
            await session.rollback()
            return Outcome(response, replayed=False)
        if response.status < 400:
            if not await _store(session, taken, response):
                await session.rollback()
                return await _stored_after_all(sessions, taken)
            await session.commit()
            return Outcome(response, replayed=False)
        await session.rollback()
    async with sessions() as session:
        try:
            stored = await _look(session, taken)
        except IdempotencyKeyInProgress:
            # A retry took the key in the moment between: it will store its own answer.
            return Outcome(response, replayed=False)
        if stored is None and await _store(session, taken, response):
            await session.commit()
            return Outcome(response, replayed=False)
        await session.commit()
    return Outcome(stored, replayed=True) if stored is not None else await _stored_after_all(sessions, taken)


async def prune(session: AsyncSession, *, limit: int = 10_000) -> int:
    """Delete up to ``limit`` keys past their 24 hours; returns how many. Commits.

    A key being reused right now (its row locked by a request that renewed it) is skipped,
    and the expiry is checked again on the row deleted, so a renewed key is never pruned.
    """
    doomed = (
        select(IdempotencyKey.id)
        .where(IdempotencyKey.expires_at <= func.now())
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.id.in_(doomed), IdempotencyKey.expires_at <= func.now())
    )
    await session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
