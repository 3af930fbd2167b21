"""Which events' inventory a unit of work changed, known once it has committed.

The seat map's version moves when a ``units.changed`` message is relayed by the worker; with
the worker stopped or behind, fans would keep seeing sold seats as free. So the code that
changes units also notes the event on its session, and whoever runs a request (the API's
middleware) collects the notes of every transaction that committed during it and bumps the
versions itself, before the answer leaves. The relay still bumps and publishes: it is the
path for changes made outside a request (the sweeper) and for live updates.

A note of a transaction that rolled back is dropped; a bump for a change that did not happen
only costs a rebuild, and a bump missed (Redis away) leaves it to the relay.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_KEY = "boxoffice.units_changed"
_committed: ContextVar[set[uuid.UUID] | None] = ContextVar("boxoffice_units_committed", default=None)


def note(session: AsyncSession, event_id: uuid.UUID) -> None:
    """Record that this transaction changed units of ``event_id``."""
    session.sync_session.info.setdefault(_KEY, set()).add(event_id)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    changed = session.info.pop(_KEY, None)
    sink = _committed.get()
    if changed and sink is not None:
        sink.update(changed)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)


@contextmanager
def collecting() -> Iterator[set[uuid.UUID]]:
    """The events whose inventory changed in transactions committed inside the block (in
    this task and the tasks it starts)."""
    sink: set[uuid.UUID] = set()
    token = _committed.set(sink)
    try:
        yield sink
    finally:
        _committed.reset(token)
