"""Reading a Server-Sent Events answer the way a browser's EventSource does (the fields of
the WHATWG event-stream format), over httpx, with a deadline on every read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Sse:
    """One dispatched block: an event (``event`` defaults to ``message`` when data came), a
    bare ``retry``, or a comment (``comment`` set, nothing else)."""

    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    comment: str | None = None

    def json(self) -> Any:
        assert self.data is not None, self
        return json.loads(self.data)


class SseReader:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()

    async def _line(self, deadline: float) -> str:
        return await asyncio.wait_for(anext(self._lines), max(deadline - time.monotonic(), 0.001))

    async def block(self, within: float = 5.0) -> Sse:
        """The next block, raising TimeoutError when none is complete within ``within`` s
        and StopAsyncIteration when the stream ends."""
        deadline = time.monotonic() + within
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            line = await self._line(deadline)
            if line == "":
                if fields or data:
                    return Sse(
                        event=fields.get("event") or ("message" if data else None),
                        id=fields.get("id"),
                        data="\n".join(data) if data else None,
                        retry=int(fields["retry"]) if "retry" in fields else None,
                    )
                continue
            if line.startswith(":"):
                return Sse(comment=line[1:].strip())
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value

    async def event(self, within: float = 5.0) -> Sse:
        """The next event, skipping bare ``retry`` blocks and comments."""
        deadline = time.monotonic() + within
        while True:
            found = await self.block(max(deadline - time.monotonic(), 0.001))
            if found.event is not None:
                return found

    async def until_quiet(self, within: float = 5.0) -> list[Sse]:
        """Every event up to the next comment (a keep-alive: nothing else was waiting)."""
        deadline = time.monotonic() + within
        found = []
        while True:
            block = await self.block(max(deadline - time.monotonic(), 0.001))
            if block.comment is not None:
                return found
            if block.event is not None:
                found.append(block)
