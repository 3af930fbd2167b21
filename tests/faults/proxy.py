"""A small TCP fault proxy for HTTP/1.1, standing between the API and a provider's server.

The faults a payment provider shows us arrive through the SDK's own HTTP client: answers that
come late, 500s, answers that never come, connections cut. Mocking the SDK would skip the very
code (timeouts, retries, keep-alive, idempotent replays) that has to cope with them, and
toxiproxy and tc netem are not available here, so the suite puts this between the two.

A mode applies per request, not per connection: each request is judged by the mode in force
when its head has arrived, so a switch also reaches the connections a client keeps alive.

- ``pass_through()``: forward.
- ``delay(s)``: hold the request ``s`` seconds, then forward.
- ``http_500()``: answer Stripe's 500 ``api_error`` at once; nothing is forwarded.
- ``blackhole()``: read, never answer; the client's own timeout ends it. With
  ``forward=True`` the request is forwarded and its answer dropped: the provider acted and
  nobody heard.
- ``reset()``: cut the connection at once (a TCP reset).

It runs on its own thread and event loop, so whatever the test's loop or the API's is doing
does not slow it down. ``seen`` counts requests by the mode that met them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections import Counter
from types import TracebackType

_BODY = json.dumps(
    {"error": {"type": "api_error", "message": "An unexpected error occurred (injected by the fault proxy)."}}
).encode()
HTTP_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    b"Request-Id: req_faultproxy\r\nContent-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.seen: Counter[str] = Counter()
        self._mode: tuple[str, float] = ("pass", 0.0)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode[0]

    def pass_through(self) -> None:
        self._mode = ("pass", 0.0)

    def delay(self, seconds: float) -> None:
        self._mode = ("delay", seconds)

    def http_500(self) -> None:
        self._mode = ("http_500", 0.0)

    def blackhole(self, *, forward: bool = False) -> None:
        self._mode = ("blackhole-forwarded" if forward else "blackhole", 0.0)

    def reset(self) -> None:
        self._mode = ("reset", 0.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        upstream: asyncio.StreamWriter | None = None
        answers: asyncio.Task[None] | None = None
        dropping = False  # from a blackhole-forwarded request on, answers are thrown away

        async def relay(source: asyncio.StreamReader) -> None:
            try:
                while chunk := await source.read(65536):
                    if not dropping:
                        writer.write(chunk)
                        await writer.drain()
            except ConnectionError:
                pass
            finally:
                # The provider closed its side: so does the client's, which then reconnects.
                writer.close()

        try:
            while (request := await _read_request(reader)) is not None:
                mode, seconds = self._mode
                self.seen[mode] += 1
                if mode == "reset":
                    _abort(writer)
                    return
                if mode == "http_500":
                    writer.write(HTTP_500)
                    await writer.drain()
                    continue
                if mode == "delay":
                    await asyncio.sleep(seconds)
                if mode != "blackhole":
                    if upstream is None:
                        up_reader, upstream = await asyncio.open_connection(*self.target)
                        answers = asyncio.create_task(relay(up_reader))
                    dropping = mode == "blackhole-forwarded"
                    upstream.write(request)
                    await upstream.drain()
                if mode.startswith("blackhole"):
                    while await reader.read(65536):  # until the client gives up
                        pass
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # The proxy is stopping. Ended quietly: asyncio reports a connection handler that
            # ends cancelled as an error.
            pass
        finally:
            self._clients.discard(writer)
            if answers is not None:
                answers.cancel()
            for stream in (upstream, writer):
                if stream is not None:
                    stream.close()

    def start(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = int(self._server.sockets[0].getsockname()[1])

        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-proxy")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(listen(), self._loop).result(timeout=10)

    def stop(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._clients):
                writer.transport.abort()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One whole request (head and a Content-Length body: all the SDK sends), or None once
    the client has closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def _abort(writer: asyncio.StreamWriter) -> None:
    # A zero linger makes the close a reset (RST), not an orderly shutdown (FIN).
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


__all__ = ["HTTP_500", "FaultProxy"]
