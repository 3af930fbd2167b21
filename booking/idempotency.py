"""Idempotency keys (Stripe's semantics), stored in PostgreSQL beside the data they protect."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
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
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default, state_enum
from booking.errors import BookingError, IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRequest

KEY_LIFETIME = dt.timedelta(hours=24)


class IdempotencyState(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class IdempotencyKey(Base):
    """One row per (caller, key). ``request_hash`` tells a replay from a reuse with another body."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("scope", "key"),
        CheckConstraint(
            "(state = 'completed') = (response_status IS NOT NULL)", name="completed_has_response"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(120))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[IdempotencyState] = mapped_column(
        state_enum(IdempotencyState, "state"), server_default=IdempotencyState.IN_PROGRESS.value
    )
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = now_default()
    expires_at: Mapped[dt.datetime] = mapped_column(
        server_default=text("now() + interval '24 hours'"), index=True
    )


# An in-progress key older than this belongs to a request that died (its transaction, and so
# its work, rolled back with it); a retry may take the key over and run again.
STALE_AFTER = dt.timedelta(seconds=60)
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


async def _begin(
    session: AsyncSession, *, scope: str, key: str, method: str, path: str, fingerprint: str
) -> int | StoredResponse:
    """Take the key for this request (returning its row id), or return the stored response.

    Raises:
        IdempotencyKeyReused: the key was used for a different request.
        IdempotencyKeyInProgress: the first request with this key is still running.
    """
    fresh: dict[str, Any] = {
        "method": method,
        "path": path,
        "request_hash": fingerprint,
        "state": IdempotencyState.IN_PROGRESS,
        "response_status": None,
        "response_headers": {},
        "response_body": None,
        "created_at": func.now(),
        "expires_at": func.now() + KEY_LIFETIME,
    }
    inserted = await session.scalar(
        pg_insert(IdempotencyKey)
        .values(scope=scope, key=key, **fresh)
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(IdempotencyKey.id)
    )
    if inserted is not None:
        return int(inserted)
    row, now = (
        await session.execute(
            select(IdempotencyKey, func.now())
            .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
            .with_for_update(of=IdempotencyKey)
            .execution_options(populate_existing=True)
        )
    ).one()
    if row.expires_at <= now:
        # Past its 24 hours but not yet pruned: the key is free again.
        await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == row.id).values(**fresh))
        return row.id
    if row.request_hash != fingerprint:
        raise IdempotencyKeyReused("Use a new key for a different request.")
    if row.state == IdempotencyState.IN_PROGRESS:
        if row.created_at > now - STALE_AFTER:
            raise IdempotencyKeyInProgress("Retry after the first request has finished.")
        await session.execute(
            update(IdempotencyKey).where(IdempotencyKey.id == row.id).values(created_at=func.now())
        )
        return row.id
    assert row.response_status is not None
    return StoredResponse(row.response_status, row.response_body or b"", dict(row.response_headers))


async def _store(session: AsyncSession, record_id: int, response: StoredResponse) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == record_id)
        .values(
            state=IdempotencyState.COMPLETED,
            response_status=response.status,
            response_headers=response.headers,
            response_body=response.body,
        )
    )


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

    The key is taken in its own committed transaction, so a concurrent duplicate sees it at
    once (and gets IdempotencyKeyInProgress). The operation's work and its stored response
    commit together in one transaction: either both happen or neither, so a crash between
    them cannot lead to the work being done twice. A BookingError raised by the operation
    rolls its work back and is stored (rendered by ``render_error``) like any response;
    anything else, or a 5xx, releases the key so the request can be retried.

    Raises:
        InvalidRequest: the key is empty, too long or not printable ASCII.
        IdempotencyKeyReused, IdempotencyKeyInProgress: see ``_begin``.
    """
    if not KEY_PATTERN.match(key):
        raise InvalidRequest("An Idempotency-Key is 1 to 255 printable ASCII characters.")
    fingerprint = request_fingerprint(method, path, body)
    async with sessions() as session:
        taken = await _begin(session, scope=scope, key=key, method=method, path=path, fingerprint=fingerprint)
        await session.commit()
    if isinstance(taken, StoredResponse):
        return Outcome(taken, replayed=True)
    try:
        async with sessions() as session:
            try:
                response = await operation(session)
            except BookingError as error:
                await session.rollback()
                response = render_error(error)
            if response.status < 500:
                await _store(session, taken, response)
                await session.commit()
                return Outcome(response, replayed=False)
    except BaseException:
        await _release(sessions, taken)
        raise
    # A server error is not the request's answer: free the key so a retry runs again.
    await _release(sessions, taken)
    return Outcome(response, replayed=False)


async def _release(sessions: async_sessionmaker[AsyncSession], record_id: int) -> None:
    async with sessions() as session:
        await session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == record_id, IdempotencyKey.state == IdempotencyState.IN_PROGRESS
            )
        )
        await session.commit()


async def prune(session: AsyncSession, *, limit: int = 10_000) -> int:
    """Delete up to ``limit`` keys past their 24 hours; returns how many. Commits."""
    doomed = select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= func.now()).limit(limit)
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(doomed)))
    await session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
