"""The transactional outbox: facts other parts must hear about, written in the same
transaction as the change that makes them true, relayed later by the daemon."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default


class OutboxMessage(Base):
    """``event_id`` is what consumers dedupe on: relay is at least once."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "available_at", "id", postgresql_where=text("relayed_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True, server_default=text("gen_random_uuid()"))
    topic: Mapped[str] = mapped_column(String(80))
    # The event (of the catalog) the fact concerns, when there is one: consumers fan out by it.
    catalog_event_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    payload: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = now_default()
    available_at: Mapped[dt.datetime] = now_default()
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    relayed_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class Topic:
    """What the outbox carries. Consumers switch on these strings, so they never change."""

    HOLD_REFUND_REQUIRED = "hold.refund_required"
    ORDER_CONFIRMED = "order.confirmed"
    ORDER_REFUNDED = "order.refunded"
    UNITS_CHANGED = "units.changed"
    # An event's seat map changed in what no sale changes (its tiers, prices, status): the
    # cached layout is dropped and the map's version moves. Payload ``{"event_id"}``.
    SEATMAP_CHANGED = "seatmap.changed"
    # An event was cancelled: its paid orders are to be refunded. Payload ``{"event_id"}``.
    EVENT_CANCELLED = "event.cancelled"
    # An order refunded because its event was cancelled: its fan is told. Payload
    # ``{"order_id", "event_id"}``.
    ORDER_CANCELLED_BY_EVENT = "order.event_cancelled"


# Facts earlier versions wrote; no code writes them now, and the relay drains any left in a
# database. One expiry job per hold was scheduled from the first three; nothing ever took the
# last three, which piled up pending for ever and made the relay's query slower with every
# hold released (the seat map hears of it from ``units.changed``, the hold row is the record).
LEGACY_TOPICS = frozenset(
    {"hold.created", "hold.renewed", "hold.paying", "hold.released", "hold.expired", "hold.payment_failed"}
)
# Relayed facts are kept this long for whoever investigates an incident, then pruned.
RETENTION = dt.timedelta(days=7)


async def emit(
    session: AsyncSession, topic: str, payload: dict[str, Any], *, catalog_event_id: uuid.UUID | None = None
) -> None:
    """Record a fact in the caller's transaction: it is relayed if and only if that commits."""
    await session.execute(
        insert(OutboxMessage).values(topic=topic, payload=payload, catalog_event_id=catalog_event_id)
    )


async def emit_many(
    session: AsyncSession,
    facts: list[tuple[str, dict[str, Any]]],
    *,
    catalog_event_id: uuid.UUID | None = None,
) -> None:
    """Several facts in one round trip, relayed in the order given."""
    await session.execute(
        insert(OutboxMessage),
        [
            {"topic": topic, "payload": payload, "catalog_event_id": catalog_event_id}
            for topic, payload in facts
        ],
    )


@dataclass(frozen=True)
class Message:
    id: int
    event_id: uuid.UUID
    topic: str
    catalog_event_id: uuid.UUID | None
    payload: dict[str, Any]
    attempts: int


Deliver = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class RelayResult:
    delivered: int
    failed: int


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(2**attempts, 300))


async def relay_batch(
    session: AsyncSession,
    deliver: Deliver,
    *,
    topics: Collection[str],
    limit: int = 100,
    fatal: tuple[type[BaseException], ...] = (),
    flush: Callable[[], Awaitable[None]] | None = None,
) -> RelayResult:
    """Deliver up to ``limit`` pending messages of ``topics`` in id order and commit.

    Only topics a consumer exists for are taken: a fact nobody acts on yet (a refund to make,
    say) stays pending, visible in the backlog, until a consumer for it is deployed, instead
    of being marked relayed and lost.

    Rows are taken with ``FOR UPDATE SKIP LOCKED``, so several relays share the work without
    delivering one message twice at the same time. Delivery is at least once: a relay that
    dies after delivering but before committing delivers again, and consumers dedupe by
    ``event_id``. A consumer may defer its work to ``flush``, called once after the batch
    and before it is recorded: if it fails, every message it covered is retried. The batch
    is recorded in one statement. A failed delivery is retried later with exponential
    backoff; an exception
    of a ``fatal`` type (the job runner's own timeout, say) is not a failed delivery and
    propagates, rolling the batch back.
    """
    rows = (
        (
            await session.execute(
                select(OutboxMessage)
                .where(
                    OutboxMessage.relayed_at.is_(None),
                    OutboxMessage.available_at <= func.now(),
                    OutboxMessage.topic.in_(list(topics)),
                )
                .order_by(OutboxMessage.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                # The session may be reused across batches: read the rows as they are now.
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
    )
    delivered: list[int] = []
    failed = 0
    for row in rows:
        message = Message(row.id, row.event_id, row.topic, row.catalog_event_id, row.payload, row.attempts)
        try:
            await deliver(message)
        except fatal:
            raise
        except Exception as error:
            failed += 1
            await _postpone(session, [row.id], row.attempts, error)
            continue
        delivered.append(row.id)
    if flush is not None and delivered:
        try:
            await flush()
        except fatal:
            raise
        except Exception as error:
            # The batch's deferred work did not happen: none of it counts as delivered.
            await _postpone(session, delivered, min(r.attempts for r in rows if r.id in delivered), error)
            failed += len(delivered)
            delivered = []
    if delivered:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(delivered))
            .values(relayed_at=func.now(), last_error=None)
        )
    await session.commit()
    return RelayResult(delivered=len(delivered), failed=failed)


async def _postpone(session: AsyncSession, ids: list[int], attempts: int, error: Exception) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids))
        .values(
            attempts=OutboxMessage.attempts + 1,
            available_at=func.now() + _backoff(attempts),
            last_error=f"{type(error).__name__}: {error}"[:2000],
        )
    )


async def pending_count(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.relayed_at.is_(None))
        )
        or 0
    )


async def prune(session: AsyncSession, *, limit: int = 10_000) -> int:
    """Delete up to ``limit`` facts relayed more than ``RETENTION`` ago, oldest first;
    returns how many. Commits. Pending facts are never pruned, however old."""
    # Ids grow with time and facts are relayed about in id order, so the oldest relayed ones
    # are at the start of the primary key: the walk stops after ``limit`` of them.
    doomed = (
        select(OutboxMessage.id)
        .where(OutboxMessage.relayed_at.is_not(None), OutboxMessage.relayed_at < func.now() - RETENTION)
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        delete(OutboxMessage).where(OutboxMessage.id.in_(doomed.scalar_subquery()))
    )
    await session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
