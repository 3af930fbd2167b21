"""Live seat maps over Server-Sent Events: Litestar's channels plugin reading the events'
Redis streams, and what each fan's connection is sent.

One reader per API process: the backend (``SeatmapStreams``) keeps one blocking ``XREAD``
going over the stream of every event someone in this process watches, and the plugin fans
each entry out in memory to that event's subscribers. A thousand fans watching one event
cost one Redis read, not a thousand connections.

The backend has the storage form of the plugin's own ``RedisChannelsStreamBackend`` (the
relay writes it, ``booking.inventory.live``), but not its reader, which this needs to
differ in four ways: it must survive Redis going away (the plugin's reader task has no
retry: its first error would end live updates in the process for good); a newly watched
stream is read from its end, not replayed from its start into the first watcher's queue;
the read blocks for ``BLOCK_MS`` instead of polling every millisecond; and each entry keeps
its stream id (``StreamEntry``), which is the SSE id a reconnecting client resumes from.

The wire protocol (docs/api.md):

- ``retry``: first, a reconnection delay of a few seconds, different per connection, so
  thousands of fans dropped at once do not all come back in the same instant.
- ``snapshot-version`` on a connection without ``Last-Event-ID``: ``{"version": n}``, the
  seat-map version now; its id is the newest entry's.
- ``change``: one stream entry (``booking.inventory.live.SeatmapChange``), id = entry id.
- ``refetch``: ``{"version": n, "reason": ...}``: what the client holds cannot be brought up
  to date from the history; GET the snapshot and go on applying changes newer than it.
  ``not-in-history`` (the ``Last-Event-ID`` is older than the history, unknown, or not an
  id), ``behind`` (this client fell more than ``BACKLOG`` entries behind), or
  ``unavailable`` (Redis went away; ``version`` is null and the stream ends).
- a ``: keep-alive`` comment every ``KEEPALIVE_SECONDS``, so proxies and clients see the
  connection alive.

Sending one change to a thousand watchers is a thousand socket writes: that, and little
else, is the cost (bench/seatmap_stream.py). So a watcher waits for its next entry without a
timer of its own (one ticker puts the keep-alives in every watcher's queue), the entry's SSE
frame and comparable id are made once for all, and entries waiting together go out in one
write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import anyio
import msgspec
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.subscriber import BacklogStrategy
from litestar.response.sse import ServerSentEventMessage
from redis.asyncio import Redis
from redis.exceptions import RedisError

from booking.inventory import live
from booking.redis_client import COMMAND_TIMEOUT_S, Breaker, async_client

log = logging.getLogger("boxoffice.api")

# How long one read waits for new entries. A stream someone starts watching joins the read
# after at most this long, so it is also the most a first watcher's first change can wait.
BLOCK_MS = 500
# Entries one read takes per stream at most; the rest come with the next read.
READ_COUNT = 100
# After a failed read, the wait before the next try (and the health of the feed).
RETRY_SECONDS = 1.0
# A new watcher waits at most this long for its stream to be located in Redis.
READY_SECONDS = 3.0
# Entries a subscriber may have waiting; one more and it is told to refetch. The relay writes
# about one entry per event per round (a second): a client stalled for a minute and more.
BACKLOG = 100
KEEPALIVE_SECONDS = 15.0
# Entries a watcher sends in one write when several are waiting.
COALESCE = 32
# Watchers one process serves at most (about 36 KiB each); past it, new ones are refused
# (503) and poll the snapshot instead. `boxoffice serve` lets granian hold more than this.
MAX_WATCHERS = 5000
# The reconnection delay each connection is given, in milliseconds.
RETRY_MS = (2000, 5000)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StreamEntry(bytes):
    """An entry's data, as the relay wrote it, with its stream id (and the id as a pair that
    compares). The plugin hands subscribers bytes; this keeps the id with them. The SSE
    frame is encoded once, by the first subscriber to send it, for all of them."""

    entry_id: str
    order: tuple[int, int] | None
    frame: bytes | None = None


def _entry(data: bytes, entry_id: str) -> StreamEntry:
    entry = StreamEntry(data)
    entry.entry_id = entry_id
    entry.order = live.entry_order(entry_id)
    return entry


# Put to every subscriber of the process when the feed's read fails: its stream ends.
FEED_LOST = _entry(b"", "")
# Put to every watcher by the keep-alive ticker.
KEEP_ALIVE = _entry(b"", "")


class SeatmapStreams(ChannelsBackend):
    """The channels backend for the events' seat-map streams.

    ``connected`` is False from a failed read until one succeeds again; while it is False,
    the route refuses new watchers, and the reader, with nothing to read, pings Redis until
    it answers. Never raises out of ``stream_events`` or ``subscribe``: a Redis error or a
    bug is logged, the read tried again after ``RETRY_SECONDS``.

    It also runs the process's keep-alive ticker, from the plugin's start to its stop: every
    ``KEEPALIVE_SECONDS``, ``KEEP_ALIVE`` to each of ``watchers``.
    """

    def __init__(
        self, redis: Redis, *, block_ms: int = BLOCK_MS, retry_seconds: float = RETRY_SECONDS
    ) -> None:
        self._redis = redis
        self._block_ms = block_ms
        self._retry_seconds = retry_seconds
        # Channel -> id of the last entry read; None until the stream's end is located.
        self._positions: dict[str, str | None] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._watched: asyncio.Event | None = None
        self._locating: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.watchers: set[SeatmapSubscriber] = set()
        self.connected = True

    def _has_channels(self) -> asyncio.Event:
        # Made on first use, inside the running loop (the backend is built before it runs).
        if self._watched is None:
            self._watched = asyncio.Event()
        return self._watched

    async def on_startup(self) -> None:
        self._ticker = asyncio.ensure_future(self._keep_alive())

    async def on_shutdown(self) -> None:
        for task in [*self._locating, *([self._ticker] if self._ticker else [])]:
            task.cancel()
        await self._redis.aclose()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            for watcher in list(self.watchers):
                watcher.offer(KEEP_ALIVE)

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        """Append ``data`` to each channel's stream as the relay does (which is where
        seat-map changes come from; this serves the plugin's own ``publish``)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in set(channels):
                key = live.stream_key_of(name)
                pipe.xadd(
                    key, {"data": data, "channel": name}, maxlen=live.HISTORY_MESSAGES, approximate=False
                )
                pipe.pexpire(key, live.HISTORY_SECONDS * 1000)
            await pipe.execute()

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Start reading ``channels`` (the plugin calls this when a channel gains its first
        subscriber). Returns at once, without waiting on Redis: the stream's end is located
        in the background, and ``wait_ready`` tells when. So the plugin's ``subscribe``,
        which registers its subscriber before calling this, is never cut in the middle."""
        fresh = [name for name in channels if name not in self._positions]
        for name in fresh:
            self._positions[name] = None
            self._ready[name] = asyncio.Event()
        if fresh:
            self._has_channels().set()
            task = asyncio.ensure_future(self._locate_soon(fresh))
            self._locating.add(task)
            task.add_done_callback(self._locating.discard)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        for name in channels:
            self._positions.pop(name, None)
            self._ready.pop(name, None)
        if not self._positions:
            self._has_channels().clear()

    async def wait_ready(self, channel: str, within: float = READY_SECONDS) -> bool:
        """Whether ``channel``'s stream is being read, waiting up to ``within`` seconds:
        from then on every entry appended after the stream's end (as it was located) reaches
        its subscribers."""
        ready = self._ready.get(channel)
        if ready is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await ready.wait()
        return ready.is_set()

    async def _locate(self, channels: list[str]) -> None:
        """Set each unlocated channel's position to its stream's newest entry, in one
        pipelined round trip.

        Raises:
            redis.exceptions.RedisError: Redis could not be read.
        """
        pending = [name for name in channels if self._positions.get(name, "") is None]
        if not pending:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in pending:
                pipe.xrevrange(live.stream_key_of(name), count=1)
            newest = await pipe.execute()
        for name, found in zip(pending, newest, strict=True):
            # Unwatched meanwhile, or watched again and located by another call: leave it.
            if self._positions.get(name, "") is None:
                self._positions[name] = found[0][0].decode() if found else "0-0"
                self._ready[name].set()

    async def _locate_soon(self, channels: list[str]) -> None:
        # Failing here is the reader's to notice and report: it locates what is left
        # before each read.
        with contextlib.suppress(RedisError):
            await self._locate(channels)

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        """Entries of every watched stream as they are appended, as ``StreamEntry``. On a
        failed read, ``FEED_LOST`` once to every channel watched then, and reads again
        after ``RETRY_SECONDS`` for as long as it takes."""
        while True:
            if self.connected:
                await self._has_channels().wait()
            found: Any = None
            failed: Exception | None = None
            try:
                await self._locate([name for name, at in self._positions.items() if at is None])
                reading: dict[Any, Any] = {
                    live.stream_key_of(name): at for name, at in self._positions.items() if at is not None
                }
                if reading:
                    found = await self._redis.xread(reading, count=READ_COUNT, block=self._block_ms)
                elif not self.connected:
                    # Lost, and nobody watching (the route refuses watchers meanwhile): find
                    # out when Redis is back all the same.
                    await self._redis.ping()
                else:
                    # Every stream was watched again while being located: locate them anew.
                    await asyncio.sleep(0.01)
            except RedisError as error:
                failed = error
            except Exception as error:
                # A reader that dies ends live updates in this process: log it, go on.
                log.exception("live seat-map feed read failed")
                failed = error
            if failed is not None:
                if self.connected:
                    log.warning("live seat-map feed lost: %s", failed)
                    self.connected = False
                    for watched in list(self._positions):
                        yield watched, FEED_LOST
                await asyncio.sleep(self._retry_seconds)
                continue
            if not self.connected:
                log.info("live seat-map feed reading again")
                self.connected = True
            channels = {live.stream_key_of(name): name for name in self._positions}
            for key, entries in found or ():
                name = channels.get(key.decode() if isinstance(key, bytes) else key)
                for raw_id, fields in entries:
                    # Not watched any more, or watched again and not yet located.
                    if name is None or self._positions.get(name) is None:
                        break
                    entry_id: str = raw_id.decode()
                    self._positions[name] = entry_id
                    data = fields.get(b"data")
                    if data is not None:
                        yield name, _entry(data, entry_id)

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        """The data of the channel's last ``limit`` entries (all when None), oldest first."""
        key = live.stream_key_of(channel)
        entries: Any = (
            list(reversed(await self._redis.xrevrange(key, count=limit) or []))
            if limit
            else await self._redis.xrange(key)
        )
        return [_entry(fields[b"data"], entry_id.decode()) for entry_id, fields in entries]


class SeatmapSubscriber(Subscriber):
    """A subscriber that notices when it fell behind (its backlog was full and an entry was
    dropped), and that can always be ended: ending one whose client stopped reading would
    otherwise wait for room in its full queue for ever."""

    def __init__(
        self,
        plugin: ChannelsPlugin,
        max_backlog: int | None = None,
        backlog_strategy: BacklogStrategy = "backoff",
    ) -> None:
        super().__init__(plugin, max_backlog=max_backlog, backlog_strategy=backlog_strategy)
        self.fell_behind = False

    def put_nowait(self, item: bytes | None) -> bool:
        if super().put_nowait(item):
            return True
        self.fell_behind = True
        return False

    def offer(self, item: bytes) -> None:
        """Put ``item`` if there is room; a full queue has something to send already."""
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(item)

    async def put(self, item: bytes | None) -> None:
        if item is None:
            # The plugin ends a subscriber by putting None: what waits is moot by then.
            self.drain()
            self._queue.put_nowait(None)
            return
        await super().put(item)

    def drain(self) -> None:
        """Forget everything waiting."""
        while True:
            try:
                self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._queue.task_done()

    async def get(self) -> bytes | None:
        """The next entry, waiting for it (None: the subscription ended)."""
        item = await self._queue.get()
        self._queue.task_done()
        return item

    def waiting(self, limit: int) -> list[bytes | None]:
        """Up to ``limit`` entries already waiting, without waiting for more."""
        found: list[bytes | None] = []
        while len(found) < limit:
            try:
                found.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
            self._queue.task_done()
        return found


class SeatmapFeed:
    """The process's live seat-map feed: the channels plugin (to add to the app) and its
    backend, on a Redis client of their own whose command timeout outlasts a blocking read."""

    def __init__(self, redis_url: str) -> None:
        self.backend = SeatmapStreams(
            async_client(redis_url, command_timeout=BLOCK_MS / 1000 + COMMAND_TIMEOUT_S)
        )
        self.plugin = ChannelsPlugin(
            self.backend,
            arbitrary_channels_allowed=True,
            subscriber_max_backlog=BACKLOG,
            subscriber_backlog_strategy="backoff",
            subscriber_class=SeatmapSubscriber,
        )

    @property
    def accepting(self) -> bool:
        """Whether a new watcher can be served live changes now: the feed is reading, and
        this process has room for one more."""
        return self.backend.connected and len(self.backend.watchers) < MAX_WATCHERS


# --- the frames ------------------------------------------------------------------------------

KEEPALIVE = ServerSentEventMessage(data=None, comment="keep-alive").encode()
_json = msgspec.json.Encoder()


def _frame(event: str, data: bytes, entry_id: str | None = None) -> bytes:
    return ServerSentEventMessage(data=data, event=event, id=entry_id).encode()


def _refetch(version: int | None, reason: str, newest: str | None = None) -> bytes:
    # The id moves the client's Last-Event-ID to the history's end ("" forgets it): having
    # refetched, it resumes from there.
    body = _json.encode({"version": version, "reason": reason})
    return _frame("refetch", body, None if version is None else newest or "")


def _change(entry: StreamEntry) -> bytes:
    if entry.frame is None:
        entry.frame = _frame("change", entry, entry.entry_id)
    return entry.frame


def _retry_field() -> bytes:
    return ServerSentEventMessage(data=None, retry=random.randint(*RETRY_MS)).encode()  # noqa: S311


async def seatmap_events(
    feed: SeatmapFeed, redis: Redis, breaker: Breaker, event_id: uuid.UUID, last_event_id: str | None
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one watcher of ``event_id``'s seat map.

    Subscribes first and reads the version and the history after, so no entry falls between
    the two: an entry in both is sent once (ids only grow, and each is sent only when newer
    than the last one sent). Unsubscribes however it ends (client gone, server stopping).
    """
    name = live.channel(event_id)
    # Registration with the plugin never waits (``SeatmapStreams.subscribe``); shielded all
    # the same, so a cancellation cannot leave a subscriber registered and unreferenced.
    with anyio.CancelScope(shield=True):
        subscriber = await feed.plugin.subscribe(name)
    try:
        assert isinstance(subscriber, SeatmapSubscriber)
        feed.backend.watchers.add(subscriber)
        yield _retry_field()
        caught = None
        if await feed.backend.wait_ready(name):
            try:
                caught = await live.catch_up(redis, event_id, last_event_id)
                breaker.succeeded()
            except RedisError as error:
                log.warning("live seat map not caught up, Redis unreachable: %s", error)
                breaker.failed()
        if caught is None:
            yield _refetch(None, "unavailable")
            return
        last = live.entry_order(caught.newest or "") or (0, 0)
        if caught.missed is None:
            yield _refetch(caught.version, "not-in-history", caught.newest)
        elif last_event_id is None:
            yield _frame("snapshot-version", _json.encode({"version": caught.version}), caught.newest or "")
        else:
            for entry in caught.missed:
                yield _change(_entry(entry.data, entry.id))
        while True:
            items = [await subscriber.get(), *subscriber.waiting(COALESCE - 1)]
            if subscriber.fell_behind:
                # What waits is older than the snapshot the client is about to fetch.
                subscriber.drain()
                subscriber.fell_behind = False
                try:
                    caught = await live.catch_up(redis, event_id, None)
                except RedisError:
                    breaker.failed()
                    yield _refetch(None, "unavailable")
                    return
                last = max(last, live.entry_order(caught.newest or "") or (0, 0))
                yield _refetch(caught.version, "behind", caught.newest)
                continue
            frames = []
            for item in items:
                if item is None or item is FEED_LOST:
                    if item is FEED_LOST:
                        frames.append(_refetch(None, "unavailable"))
                    yield b"".join(frames)
                    return
                if item is KEEP_ALIVE:
                    frames.append(KEEPALIVE)
                elif isinstance(item, StreamEntry) and item.order is not None and item.order > last:
                    last = item.order
                    frames.append(_change(item))
            if frames:
                yield frames[0] if len(frames) == 1 else b"".join(frames)
    finally:
        feed.backend.watchers.discard(subscriber)
        with anyio.CancelScope(shield=True):
            await feed.plugin.unsubscribe(subscriber, name)
