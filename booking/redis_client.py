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

import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 1.0
RETRIES = 1


def client_url(url: str) -> str:
    """``url`` as redis-py takes it: Valkey speaks the same protocol, but redis-py knows only
    the redis://, rediss:// and unix:// schemes, so valkey:// and valkeys:// are renamed."""
    for valkey, redis in (("valkey://", "redis://"), ("valkeys://", "rediss://")):
        if url.startswith(valkey):
            return redis + url.removeprefix(valkey)
    return url


def sync_client(url: str, *, command_timeout: float = COMMAND_TIMEOUT_S) -> Redis:
    """A blocking client; ``command_timeout`` must exceed any blocking command's own wait
    (a queue pop of two seconds needs more than two)."""
    return Redis.from_url(
        client_url(url),
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=command_timeout,
        retry=Retry(NoBackoff(), RETRIES),
    )


def async_client(url: str, *, command_timeout: float = COMMAND_TIMEOUT_S) -> AsyncRedis:
    return AsyncRedis.from_url(
        client_url(url),
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=command_timeout,
        retry=AsyncRetry(NoBackoff(), RETRIES),
    )


class Breaker:
    """Whether to try Redis at all, per process. After a failure Redis is skipped for
    ``cool_down`` seconds, then one caller tries it again (the others keep skipping until
    that trial's verdict): during an outage a request pays Redis's timeout only once per
    cool-down, not every time.

    Callers report each use with ``succeeded`` or ``failed``. Not thread-safe: one per event
    loop, where the check and the update cannot interleave.
    """

    def __init__(self, cool_down: float = 2.0) -> None:
        self.cool_down = cool_down
        self.open_until = 0.0

    def allows(self) -> bool:
        now = time.monotonic()
        if now < self.open_until:
            return False
        if self.open_until:
            # This caller is the trial; the rest skip until it reports.
            self.open_until = now + self.cool_down
        return True

    @property
    def is_open(self) -> bool:
        return self.open_until != 0.0

    def succeeded(self) -> None:
        self.open_until = 0.0

    def failed(self) -> None:
        self.open_until = time.monotonic() + self.cool_down
