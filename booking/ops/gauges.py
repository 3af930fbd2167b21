"""What a metrics scrape reads from PostgreSQL: the outbox backlog and the holds the
sweeper has yet to tidy.

Two small aggregate statements on partial indexes (the pending outbox rows, the live holds),
so their cost follows the backlog, not the history. Synchronous on purpose: the scrape runs
them on a thread of its own with a plain connection, away from the request pool and the
event loop (see ``api.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from booking.holds.models import Hold, HoldState
from booking.outbox import OutboxMessage

# Live hold states (``booking.holds.service.LIVE_STATES``): what the partial index covers.
_LIVE = sorted({HoldState.ACTIVE, HoldState.PAYING, HoldState.FAILED})
# What the sweeper ends once the deadline passes; a paying hold waits for its payment.
_SWEPT = sorted({HoldState.ACTIVE, HoldState.FAILED})


@dataclass(frozen=True)
class Backlog:
    outbox_pending: int
    # Age, by the database clock, of the oldest row not relayed yet; 0 when none is pending.
    outbox_oldest_age_seconds: float
    live_holds: int
    # Live holds past their deadline that the sweeper has not ended yet.
    overdue_holds: int


def read_backlog(connection: Connection) -> Backlog:
    """The backlog as of now, in two statements.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database could not be read.
    """
    pending, oldest = connection.execute(
        select(
            func.count(),
            func.coalesce(func.extract("epoch", func.now() - func.min(OutboxMessage.created_at)), 0),
        ).where(OutboxMessage.relayed_at.is_(None))
    ).one()
    live, overdue = connection.execute(
        select(
            func.count(),
            func.count().filter(Hold.state.in_(_SWEPT), Hold.expires_at <= func.now()),
        ).where(Hold.state.in_(_LIVE))
    ).one()
    return Backlog(
        outbox_pending=int(pending),
        outbox_oldest_age_seconds=max(0.0, float(oldest)),
        live_holds=int(live),
        overdue_holds=int(overdue),
    )
