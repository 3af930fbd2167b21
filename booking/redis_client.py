"""Redis clients that fail fast: every process connects through here.

Redis carries queues, caches and pub/sub, never the record, so when it stalls or dies the
product must notice within about a second and carry on with what does not need it (reads
from PostgreSQL, the sale's guarded statements) rather than hang a request or a worker. The
library's defaults do the opposite: no socket timeout (a stopped server hangs the caller for
ever) and three retries with exponential back-off (a dead one costs seconds per command).

So: a one-second connect and command timeout, and one immediate retry, which is what a
pooled connection broken by a server restart needs (the retry gets a fresh connection) and
all an outage can afford.
"""

from __future__ import annotations

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 1.0
RETRIES = 1


def sync_client(url: str, *, command_timeout: float = COMMAND_TIMEOUT_S) -> Redis:
    """A blocking client; ``command_timeout`` must exceed any blocking command's own wait
    (a queue pop of two seconds needs more than two)."""
    return Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=command_timeout,
        retry=Retry(NoBackoff(), RETRIES),
    )


def async_client(url: str, *, command_timeout: float = COMMAND_TIMEOUT_S) -> AsyncRedis:
    return AsyncRedis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=command_timeout,
        retry=AsyncRetry(NoBackoff(), RETRIES),
    )
