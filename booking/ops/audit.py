"""The audit log: every staff and operator action, who took it, when, and how it ended.

Rows are only ever inserted. The staff API writes one per state-changing request (see
``api/staff.py``), the on-call CLI one per command that changes something, including those
that were refused or failed, so a failure leaves its trace too.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.ops.models import ActorType, AuditEntry, Outcome
from booking.text import storable


@dataclass(frozen=True)
class Actor:
    type: ActorType
    id: str | None
    name: str

    @classmethod
    def cli(cls) -> Actor:
        """The person at this terminal, as the operating system names them."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(ActorType.CLI, None, f"{user}@{socket.gethostname()}"[:120])


@dataclass(frozen=True)
class AuditView:
    id: int
    at: dt.datetime
    actor_type: str
    actor_id: str | None
    actor_name: str
    action: str
    target_type: str | None
    target_id: str | None
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)


async def record(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    outcome: Outcome,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one entry to ``session``; it lands when the caller commits (with the work it
    describes, when they share the transaction)."""
    session.add(
        AuditEntry(
            actor_type=actor.type,
            actor_id=actor.id,
            actor_name=storable(actor.name, 120),
            action=storable(action, 120),
            target_type=storable(target_type, 60) if target_type else None,
            target_id=storable(target_id, 120) if target_id else None,
            outcome=outcome,
            details=details or {},
        )
    )
    await session.flush()


async def tail(
    session: AsyncSession, *, limit: int = 50, after_id: int | None = None, action: str | None = None
) -> list[AuditView]:
    """The newest ``limit`` entries, newest first; with ``after_id``, only entries after it
    (what a follower has not seen yet)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if after_id is not None:
        query = query.where(AuditEntry.id > after_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return [
        AuditView(
            id=row.id,
            at=row.at,
            actor_type=row.actor_type.value,
            actor_id=row.actor_id,
            actor_name=row.actor_name,
            action=row.action,
            target_type=row.target_type,
            target_id=row.target_id,
            outcome=row.outcome.value,
            details=dict(row.details),
        )
        for row in await session.scalars(query)
    ]
