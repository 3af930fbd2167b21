"""Refunding a cancelled event: the consumer of ``event.cancelled``, and a sweep every minute.

Both refund the event's paid orders in batches (``booking.catalog.admin.
refund_cancelled_orders``), each batch its own short transaction, then pay the recorded
refunds back through the provider (``jobs.payments.make_refunds``, whose provider calls carry
each refund's idempotency key). Running twice, or beside each other, refunds each order once:
a batch takes only orders still confirmed, under their row locks. A job that reaches its time
budget stops between batches; the sweep carries on a minute later.
"""

from __future__ import annotations

import time
import uuid

from booking.catalog import admin
from booking.logs import get_logger
from jobs.db import job_session, job_sessions
from jobs.payments import make_refunds

log = get_logger("boxoffice.jobs.catalog")
# Well inside the worker's job timeout: the rest is left for the next sweep.
BUDGET_SECONDS = 120.0
REFUNDS_PER_ROUND = 100


async def refund_cancelled_event(event_id: str, *, budget: float = BUDGET_SECONDS) -> dict[str, int]:
    """Refund the paid orders of one cancelled event, then pay the refunds back. Returns how
    many orders were refunded and how many refunds the provider was asked to pay."""
    deadline = time.monotonic() + budget
    refunded = 0
    async with job_sessions() as sessions:
        while time.monotonic() < deadline:
            async with sessions() as session:
                done = await admin.refund_cancelled_orders(session, uuid.UUID(event_id))
                await session.commit()
            refunded += done
            if done < admin.REFUND_BATCH:
                break
    paid = 0
    while refunded and time.monotonic() < deadline:
        counts = await make_refunds(limit=REFUNDS_PER_ROUND)
        handled = sum(counts.values())
        paid += counts.get("succeeded", 0) + counts.get("submitted", 0)
        if handled < REFUNDS_PER_ROUND or counts.get("errors", 0) or counts.get("paused", 0):
            break
    if refunded:
        log.info("cancelled event refunded", event_id=event_id, orders=refunded, refunds_paid=paid)
    return {"orders": refunded, "refunds_paid": paid}


async def refund_cancelled_events() -> dict[str, int]:
    """Every minute: any cancelled event with paid orders left (a batch the cancellation job
    had no time for, or a payment that succeeded after the cancel)."""
    async with job_session() as session:
        due = await admin.cancelled_with_orders(session)
        await session.rollback()
    orders = paid = 0
    for event_id in due:
        counts = await refund_cancelled_event(str(event_id))
        orders += counts["orders"]
        paid += counts["refunds_paid"]
    return {"events": len(due), "orders": orders, "refunds_paid": paid}
