"""Overload is refused, not queued.

A burst larger than a process can work through would otherwise pile up inside it: every
request waiting on the connection pool, each wait ending in a timeout long after the fan gave
up. Two bounds keep the answer fast instead. This middleware admits at most
``max_in_flight`` requests per process at once and answers the rest at once; and the pool
wait is short (``db_pool_timeout_seconds``), answered the same way. Both are 503
problem+json with ``Retry-After``, which clients (and the benchmark) honour; the in-flight
refusal's grows with how many were refused in the last second.
"""

from __future__ import annotations

import json
import time

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import OVERLOADED, problem_type

# Probes must still see a loaded process: a load balancer asks /ready to decide where
# traffic goes and an orchestrator asks /health whether to restart it, and a process busy at
# its bound is both alive and ready. The metrics scrape too: overload is when it matters.
EXEMPT = frozenset({"/health", "/ready", "/metrics"})
# Retry-After grows with the refusals of the last second, in units of the bound: a few
# refusals say "in a second", a stampede of ten times the bound says "in ten". Clients that
# all come back after one second would otherwise keep the process busy saying no.
MAX_RETRY_AFTER_SECONDS = 10

_CODE, _TITLE, _DETAIL = OVERLOADED
# Answered before the app runs (no exception handler on this path), so written out once.
_BODY = json.dumps({"type": problem_type(_CODE), "title": _TITLE, "status": 503, "detail": _DETAIL}).encode()
_HEADERS = {
    seconds: [
        (b"content-type", b"application/problem+json"),
        (b"retry-after", str(seconds).encode()),
        (b"content-length", str(len(_BODY)).encode()),
    ]
    for seconds in range(1, MAX_RETRY_AFTER_SECONDS + 1)
}


class InFlightLimit(ASGIMiddleware):
    """At most ``limit`` HTTP requests of this process are being worked on at once.

    Work already under way comes first: a route marked ``opt={"admission": "finish"}``
    (checkout, where the fan holds seats and is paying; releasing a hold, which gives seats
    back) may use the whole bound, every other request only three quarters of it. Under
    overload, new holds are refused before the checkouts of fans who already hold tickets,
    so the seats held are turned into orders instead of waiting, held, while everyone
    retries.

    A long-lived stream (a route marked ``opt={"stream": True}``: the live seat map, the
    waiting room's position) counts only until its answer starts: its set-up (the event
    looked up in the database) is work like any request's, but a thousand fans idling on
    their streams are not a thousand requests in flight, and must not shut the API.

    A counter, not a queue: the event loop is single-threaded, so the check and the
    increment cannot interleave with another request's.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.new_work_limit = max(1, limit * 3 // 4)
        self.in_flight = 0
        self._window = 0
        self._refused_in_window = 0
        self._refused_before = 0

    def retry_after(self, now: float) -> int:
        """Seconds to tell a refused client: 1, plus one per bound's worth of refusals in
        the previous second."""
        window = int(now)
        if window != self._window:
            self._refused_before = self._refused_in_window if window == self._window + 1 else 0
            self._window, self._refused_in_window = window, 0
        self._refused_in_window += 1
        return min(MAX_RETRY_AFTER_SECONDS, 1 + self._refused_before // self.limit)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["path"] in EXEMPT:
            await next_app(scope, receive, send)
            return
        finishing = scope["route_handler"].opt.get("admission") == "finish"
        if self.in_flight >= (self.limit if finishing else self.new_work_limit):
            headers = _HEADERS[self.retry_after(time.monotonic())]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": _BODY, "more_body": False})
            return
        self.in_flight += 1
        if not scope["route_handler"].opt.get("stream"):
            try:
                await next_app(scope, receive, send)
            finally:
                self.in_flight -= 1
            return
        counted = True

        async def send_uncounted(message: Message) -> None:
            nonlocal counted
            if counted and message["type"] == "http.response.start":
                counted = False
                self.in_flight -= 1
            await send(message)

        try:
            await next_app(scope, receive, send_uncounted)
        finally:
            if counted:
                self.in_flight -= 1
