"""The outbox relay and its consumers.

Relay is at least once; every consumer here is idempotent by the message's ``event_id``:
scheduling uses a job id derived from the message, publishing remembers what it published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.timeouts import JobTimeoutException

from booking.catalog.search import EVENT_CHANGED
from booking.outbox import Message, RelayResult, Topic, relay_batch
from jobs.db import job_session, redis_url

SEEN_TTL = int(dt.timedelta(days=7).total_seconds())
HOLDS_QUEUE = "holds"
DEFAULT_QUEUE = "default"


def units_channel(event_id: str) -> str:
    """Pub/sub channel carrying one event's unit changes (seat maps listen here)."""
    return f"boxoffice:event:{{{event_id}}}:units"


def seatmap_version_key(event_id: str) -> str:
    # The {event_id} hash tag keeps an event's keys in one Redis Cluster slot.
    return f"boxoffice:event:{{{event_id}}}:seatmap-version"


def expiry_job_id(hold_id: str, deadline: dt.datetime) -> str:
    # One job per hold and deadline: a renewal schedules a new one, a re-relay does not.
    return f"expire-{hold_id}-{int(deadline.timestamp())}"


class Consumers:
    # The topics acted on here; others stay pending on the outbox for their own consumer.
    TOPICS = frozenset(
        {
            Topic.HOLD_CREATED,
            Topic.HOLD_RENEWED,
            Topic.HOLD_PAYING,
            Topic.UNITS_CHANGED,
            Topic.ORDER_CONFIRMED,
            Topic.ORDER_REFUNDED,
            Topic.HOLD_REFUND_REQUIRED,
            EVENT_CHANGED,
        }
    )

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.holds_queue = Queue(HOLDS_QUEUE, connection=redis)
        self.default_queue = Queue(DEFAULT_QUEUE, connection=redis)

    async def deliver(self, message: Message) -> None:
        if message.topic in (Topic.HOLD_CREATED, Topic.HOLD_RENEWED, Topic.HOLD_PAYING):
            self.schedule_expiry(message)
        elif message.topic == Topic.UNITS_CHANGED:
            self.publish_units(message)
        elif message.topic == Topic.ORDER_CONFIRMED:
            self.enqueue_once(message, "jobs.mail.send_order_confirmation", message.payload["order_id"])
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

    def schedule_expiry(self, message: Message) -> None:
        hold_id = str(message.payload["hold_id"])
        deadline = dt.datetime.fromisoformat(str(message.payload["expires_at"]))
        with contextlib.suppress(DuplicateJobError):  # already scheduled: a repeated message
            self.holds_queue.enqueue_at(
                deadline,
                "jobs.holds.expire_hold",
                hold_id,
                job_id=expiry_job_id(hold_id, deadline),
                unique=True,
                retry=Retry(max=3, interval=[1, 5, 15]),
                result_ttl=3600,
            )

    def publish_units(self, message: Message) -> None:
        """Bump the event's seat-map version and publish the change, once per message.

        The message is remembered only after the publish succeeds: a Redis error leaves it
        to be retried rather than marked seen and never published. A crash between the two
        publishes it twice, which listeners tolerate (updates carry the message id)."""
        seen = f"boxoffice:seen:units:{message.event_id}"
        if self.redis.exists(seen):
            return
        event_id = str(message.payload["event_id"])
        version = self.redis.incr(seatmap_version_key(event_id))
        update = {
            "id": str(message.event_id),
            "version": version,
            "unit_ids": message.payload["unit_ids"],
            "state": message.payload["state"],
        }
        self.redis.publish(units_channel(event_id), json.dumps(update))
        self.redis.set(seen, 1, ex=SEEN_TTL)


async def relay_outbox(limit: int = 500) -> dict[str, int]:
    """Every second: hand pending outbox messages to the consumers, in batches."""
    redis = Redis.from_url(redis_url())
    consumers = Consumers(redis)
    delivered = failed = 0
    try:
        async with job_session() as session:
            while True:
                result: RelayResult = await relay_batch(
                    session,
                    consumers.deliver,
                    topics=Consumers.TOPICS,
                    limit=limit,
                    fatal=(JobTimeoutException,),
                )
                delivered += result.delivered
                failed += result.failed
                if result.delivered + result.failed < limit:
                    break
    finally:
        redis.close()
    return {"delivered": delivered, "failed": failed}
