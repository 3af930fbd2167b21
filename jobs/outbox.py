"""The outbox relay and its consumers.

Relay is at least once; every consumer here is idempotent by the message's ``event_id``:
scheduling uses a job id derived from the message, publishing remembers what it published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.timeouts import JobTimeoutException
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.search import EVENT_CHANGED
from booking.inventory import live, seatmap
from booking.outbox import LEGACY_TOPICS, Message, RelayResult, Topic, relay_batch
from booking.redis_client import sync_client
from jobs.db import job_session, redis_url

SEEN_TTL = int(dt.timedelta(days=7).total_seconds())
DEFAULT_QUEUE = "default"
# Orders per confirmation-mail job: about a second of PDF rendering.
MAIL_SLICE = 25
# Cancellation notices per mail job: plain text, no tickets drawn.
CANCELLATION_SLICE = 100


def seatmap_version_key(event_id: str) -> str:
    # The {event_id} hash tag keeps an event's keys in one Redis Cluster slot.
    return f"boxoffice:event:{{{event_id}}}:seatmap-version"


class Consumers:
    """What the relay does with each topic. ``deliver`` only collects; ``flush`` does the
    work of a whole batch in a few round trips (the relay calls it before it records the
    batch as delivered, so a failed flush leaves the batch pending, to be retried).
    ``session`` is the relay's own, inside the batch's transaction: the seat-map changes
    read the units' states through it."""

    # The topics acted on here; others stay pending on the outbox for their own consumer.
    TOPICS = frozenset(
        {
            Topic.UNITS_CHANGED,
            Topic.ORDER_CONFIRMED,
            Topic.ORDER_REFUNDED,
            Topic.HOLD_REFUND_REQUIRED,
            EVENT_CHANGED,
            Topic.SEATMAP_CHANGED,
            Topic.EVENT_CANCELLED,
            Topic.ORDER_CANCELLED_BY_EVENT,
            # Written by earlier versions to schedule one expiry job per hold; the sweeper
            # expires holds by their deadline now, so rows left from then are only drained.
            *LEGACY_TOPICS,
        }
    )

    def __init__(self, redis: Redis, session: AsyncSession) -> None:
        self.redis = redis
        self.session = session
        self.default_queue = Queue(DEFAULT_QUEUE, connection=redis)
        self._units: list[Message] = []
        self._confirmations: list[Message] = []
        self._layouts: list[Message] = []
        self._cancellations: list[Message] = []

    async def deliver(self, message: Message) -> None:
        if message.topic == Topic.UNITS_CHANGED:
            # Checked here, so a malformed fact fails (and is retried) alone, never the
            # whole batch's flush.
            uuid.UUID(str(message.payload["event_id"]))
            if not all(isinstance(unit, int) for unit in message.payload["unit_ids"]):
                raise ValueError("units.changed names a unit that is not an integer id")
            self._units.append(message)
        elif message.topic == Topic.ORDER_CONFIRMED:
            self._confirmations.append(message)
        elif message.topic == Topic.HOLD_REFUND_REQUIRED:
            # The refund itself was recorded with the settlement; pay it back now rather than
            # at the next periodic round, and tell the fan why.
            self.enqueue_once(message, "jobs.payments.make_refunds", job="refund")
            self.enqueue_once(
                message,
                "jobs.mail.send_refund_notice",
                message.payload["hold_id"],
                message.payload.get("reason", ""),
            )
        elif message.topic == Topic.ORDER_REFUNDED:
            self.enqueue_once(message, "jobs.payments.make_refunds", job="refund")
        elif message.topic == EVENT_CHANGED:
            self.enqueue_once(
                message, "jobs.search.refresh_event_search", message.payload["event_id"], job="search"
            )
        elif message.topic == Topic.SEATMAP_CHANGED:
            uuid.UUID(str(message.payload["event_id"]))
            self._layouts.append(message)
        elif message.topic == Topic.EVENT_CANCELLED:
            # The paid orders are refunded at once; the periodic sweep catches the rest.
            self.enqueue_once(
                message, "jobs.catalog.refund_cancelled_event", message.payload["event_id"], job="cancel"
            )
        elif message.topic == Topic.ORDER_CANCELLED_BY_EVENT:
            self._cancellations.append(message)

    async def flush(self) -> None:
        units, self._units = self._units, []
        confirmations, self._confirmations = self._confirmations, []
        if units:
            await self.publish_units(units)
        layouts, self._layouts = self._layouts, []
        if layouts:
            self.drop_layouts(layouts)
        cancellations, self._cancellations = self._cancellations, []
        for start in range(0, len(cancellations), CANCELLATION_SLICE):
            part = cancellations[start : start + CANCELLATION_SLICE]
            with contextlib.suppress(DuplicateJobError):
                self.default_queue.enqueue(
                    "jobs.mail.send_cancellation_notices",
                    [(m.payload["order_id"], str(m.event_id)) for m in part],
                    job_id=f"cancellations-{part[0].event_id}",
                    unique=True,
                    retry=Retry(max=5, interval=[5, 30, 120, 600, 1800]),
                    result_ttl=3600,
                    failure_ttl=7 * 86400,
                    job_timeout=120,
                )
        # One mail job per slice of a batch, not per order: a burst of orders costs a few
        # jobs' overhead. Slices stay small because the worker runs one job at a time and
        # the relay (with the seat-map versions) must get its turn every second or two.
        # Named by its first fact, so a batch relayed again is not enqueued twice; should a
        # retry group the facts differently, a message may go out twice with the same
        # Message-ID, which mail clients fold.
        for start in range(0, len(confirmations), MAIL_SLICE):
            part = confirmations[start : start + MAIL_SLICE]
            with contextlib.suppress(DuplicateJobError):
                self.default_queue.enqueue(
                    "jobs.mail.send_order_confirmations",
                    [(m.payload["order_id"], str(m.event_id)) for m in part],
                    job_id=f"confirmations-{part[0].event_id}",
                    unique=True,
                    retry=Retry(max=5, interval=[5, 30, 120, 600, 1800]),
                    result_ttl=3600,
                    failure_ttl=7 * 86400,
                    job_timeout=120,
                )

    def drop_layouts(self, messages: list[Message]) -> None:
        """After an edit no sale makes (tiers, prices, status): forget each event's cached
        seat-map layout and snapshot and move its version, one round trip for the batch.
        Repeating it only costs a rebuild."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in sorted({uuid.UUID(str(m.payload["event_id"])) for m in messages}, key=str):
            pipe.delete(*seatmap.cached_keys(event_id))
            pipe.incr(seatmap_version_key(str(event_id)))
        pipe.execute()

    def enqueue_once(self, message: Message, func: str, *args: object, job: str | None = None) -> None:
        """One job per message and kind: a re-relayed message does not enqueue it twice.
        Jobs that take the message's id use it to dedupe their own effect (a Message-ID)."""
        name = job or func.rsplit(".", 1)[1]
        with_id = func.startswith("jobs.mail.")
        with contextlib.suppress(DuplicateJobError):
            self.default_queue.enqueue(
                func,
                *args,
                *([str(message.event_id)] if with_id else []),
                job_id=f"{name}-{message.event_id}",
                unique=True,
                retry=Retry(max=5, interval=[5, 30, 120, 600, 1800]),
                result_ttl=3600,
                failure_ttl=7 * 86400,
            )

    async def publish_units(self, messages: list[Message]) -> None:
        """Bump each event's seat-map version once and append one live change per event
        (``booking.inventory.live``) for the whole batch: two statements and three Redis
        round trips, however many messages and events.

        The entry states the units' states as PostgreSQL has them now, so it is right even
        for a message relayed late or again. A message is remembered only in the same
        pipeline as its entry, after it: a Redis error leaves it to be retried rather than
        marked seen and never published. A crash between the entry and the mark appends
        another entry for its units when the message is relayed again, stating their
        states then, which listeners take as any other change."""
        seen_keys = [f"boxoffice:seen:units:{m.event_id}" for m in messages]
        already = self.redis.mget(seen_keys)
        fresh = [(m, key) for m, key, done in zip(messages, seen_keys, already, strict=True) if done is None]
        if not fresh:
            return
        named: dict[uuid.UUID, set[int]] = {}
        for message, _ in fresh:
            named.setdefault(uuid.UUID(str(message.payload["event_id"])), set()).update(
                message.payload["unit_ids"]
            )
        changes = await live.read_changes(self.session, named)
        events = sorted(changes, key=str)
        pipe = self.redis.pipeline(transaction=False)
        for event_id in events:
            pipe.incr(seatmap_version_key(str(event_id)))
        versions = dict(zip(events, pipe.execute(), strict=True))
        pipe = self.redis.pipeline(transaction=False)
        for event_id in events:
            key = live.stream_key(event_id)
            data = live.encode(changes[event_id].at(event_id, versions[event_id]))
            # The form Litestar's Redis stream backend writes: fields data and channel, the
            # stream capped (exactly, so the history bound is the documented one) and
            # expiring after the last entry.
            pipe.xadd(
                key,
                {"data": data, "channel": live.channel(event_id)},
                maxlen=live.HISTORY_MESSAGES,
                approximate=False,
            )
            pipe.pexpire(key, live.HISTORY_SECONDS * 1000)
        for _, key in fresh:
            pipe.set(key, 1, ex=SEEN_TTL)
        pipe.execute()


async def relay_outbox(limit: int = 500) -> dict[str, int]:
    """Every second: hand pending outbox messages to the consumers, in batches."""
    redis = sync_client(redis_url())
    delivered = failed = 0
    try:
        async with job_session() as session:
            consumers = Consumers(redis, session)
            while True:
                result: RelayResult = await relay_batch(
                    session,
                    consumers.deliver,
                    topics=Consumers.TOPICS,
                    limit=limit,
                    fatal=(JobTimeoutException,),
                    flush=consumers.flush,
                )
                delivered += result.delivered
                failed += result.failed
                if result.delivered + result.failed < limit:
                    break
    finally:
        redis.close()
    return {"delivered": delivered, "failed": failed}
