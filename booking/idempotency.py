"""Idempotency keys (Stripe's semantics), stored in PostgreSQL beside the data they protect."""

from __future__ import annotations

import datetime as dt
import hashlib
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
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default
from booking.errors import BookingError, IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRequest

KEY_LIFETIME = dt.timedelta(hours=24)


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
    path: Mapped[str] = mapped_column(String(500))
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


async def _take(
    session: AsyncSession, *, scope: str, key: str, method: str, path: str, fingerprint: str
) -> int | StoredResponse:
    """Take the key inside the caller's open transaction (returning its row id, locked until
    that transaction ends), or return the response stored by an earlier request.

    The request running with a key holds a transaction-scoped advisory lock on it; a
    duplicate that arrives meanwhile fails to take that lock and is answered at once, without
    waiting on the first request or holding a connection for it. The lock and the key row
    are taken in one statement.

    Raises:
        IdempotencyKeyReused: the key was used for a different request.
        IdempotencyKeyInProgress: a request with this key is running right now.
    """
    fresh: dict[str, Any] = {
        "method": method,
        "path": path,
        "request_hash": fingerprint,
        "response_status": None,
        "response_headers": {},
        "response_body": None,
        "created_at": func.now(),
        "expires_at": func.now() + KEY_LIFETIME,
    }
    try:
        got, inserted = (
            await session.execute(
                text(
                    "WITH gate AS (SELECT pg_try_advisory_xact_lock(hashtextextended(:lock, 0)) AS got),"
                    " taken AS ("
                    "  INSERT INTO idempotency_keys"
                    "   (scope, key, method, path, request_hash, response_headers, created_at, expires_at)"
                    "  SELECT :scope, :key, :method, :path, :hash, '{}'::jsonb, now(), now() + :lifetime"
                    "  FROM gate WHERE got"
                    "  ON CONFLICT (scope, key) DO NOTHING RETURNING id)"
                    " SELECT (SELECT got FROM gate), (SELECT id FROM taken)"
                ),
                {
                    "lock": f"idempotency:{scope}:{key}",
                    "scope": scope,
                    "key": key,
                    "method": method,
                    "path": path,
                    "hash": fingerprint,
                    "lifetime": KEY_LIFETIME,
                },
            )
        ).one()
        if not got:
            raise IdempotencyKeyInProgress("Retry after the first request has finished.")
        if inserted is not None:
            return int(inserted)
        found = (
            await session.execute(
                select(IdempotencyKey, func.now())
                .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
                .with_for_update(of=IdempotencyKey)
                .execution_options(populate_existing=True)
            )
        ).one_or_none()
    except DBAPIError as error:
        if isinstance(error.orig, pg_errors.LockNotAvailable):
            raise IdempotencyKeyInProgress("Retry after the first request has finished.") from None
        raise
    if found is None:
        # Pruned between the two statements: the key is free.
        return await _take(session, scope=scope, key=key, method=method, path=path, fingerprint=fingerprint)
    row, now = found
    if row.expires_at <= now:
        # Past its 24 hours but not yet pruned: the key is free again.
        await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == row.id).values(**fresh))
        return row.id
    if row.request_hash != fingerprint:
        raise IdempotencyKeyReused("Use a new key for a different request.")
    assert row.response_status is not None, "a committed key always has its response"
    return StoredResponse(row.response_status, row.response_body or b"", dict(row.response_headers))


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

    The key, the operation's work and the stored response are one transaction: either all
    commit or none does, so a crash at any point leaves the key free and nothing done, and a
    retry runs the request afresh. The operation runs in a savepoint: a BookingError it raises,
    or a 4xx response it returns, undoes its work and the response is stored and replayed
    like any other. A 5xx (or any other exception) is not the request's answer: everything
    rolls back, the key included, so a retry runs again.

    Raises:
        InvalidRequest: the key is empty, too long or not printable ASCII.
        IdempotencyKeyReused, IdempotencyKeyInProgress: see ``_take``.
    """
    if not KEY_PATTERN.match(key):
        raise InvalidRequest("An Idempotency-Key is 1 to 255 printable ASCII characters.")
    fingerprint = request_fingerprint(method, path, body)
    async with sessions() as session:
        taken = await _take(session, scope=scope, key=key, method=method, path=path, fingerprint=fingerprint)
        if isinstance(taken, StoredResponse):
            await session.commit()
            return Outcome(taken, replayed=True)
        work = await session.begin_nested()
        try:
            response = await operation(session)
        except BookingError as error:
            await work.rollback()
            response = render_error(error)
        else:
            if response.status >= 400:
                await work.rollback()
            else:
                await work.commit()
        if response.status >= 500:
            await session.rollback()
            return Outcome(response, replayed=False)
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == taken)
            .values(
                response_status=response.status,
                response_headers=response.headers,
                response_body=response.body,
            )
        )
        await session.commit()
        return Outcome(response, replayed=False)


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
