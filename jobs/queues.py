"""Boxoffice's job queues: their names, in the order a worker takes jobs from them.

The jobs own this list: whoever enqueues, inspects or drains a job (the API, the CLI, the
worker daemon) reads it from here. It imports nothing but the error it raises, so a command
can check a queue name without loading RQ or a Redis client.
"""

from __future__ import annotations

from booking.errors import UnknownQueue

# Ordered by urgency: a worker always drains holds before the outbox before the rest.
QUEUES: tuple[str, ...] = ("holds", "outbox", "default")


def queue_names(queue: str | None = None) -> tuple[str, ...]:
    """Our queues, or just ``queue``.

    Raises:
        UnknownQueue: ``queue`` is not one of ours.
    """
    if queue is None:
        return QUEUES
    if queue not in QUEUES:
        raise UnknownQueue(f"No queue called {queue[:60]!r}; the queues are: {', '.join(QUEUES)}.")
    return (queue,)
