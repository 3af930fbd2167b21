"""The OpenAPI document declares every answer the API gives.

Two halves, one rule (``undeclared``): an answer's status is a response of its operation; a
problem answer's ``type`` is among that response's examples, with the same title; every
header of ``api.openapi.RESPONSE_HEADERS`` the answer carries is declared on it, and every
one declared required is there; and a request header the answer shows was read
(``Idempotency-Key`` replayed or refused, ``If-None-Match`` for a 304, ``Stripe-Signature``
refused) is a declared parameter.

1. Every answer of every test (``tests/conftest.py`` wraps each Boxoffice app a test
   starts, in process or on loopback) is held to the rule, and the test that received an
   undeclared one fails at teardown, naming it. So the whole suite's answers, domain
   errors included, keep the document honest.
2. This module drives every operation of the document itself (compared against the app's
   route list, like ``test_authorization_matrix``): each through the answers that matter
   (anonymous, a staff role refused, ids that do not exist, bad input, a key replayed, and
   a request that works) so the contract holds when this file runs alone, and a route added
   without its declarations fails here.

Chosen over a table of every problem of every route driven here: the domain errors are
already provoked, on purpose, by the tests of each area; checking their answers where they
happen covers them without a second copy of those scenarios.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from api.admission import ADMISSION_TOKEN
from api.auth import BEARER, STAFF_BEARER
from api.idempotency import MAX_BODY
from api.openapi import (
    IDEMPOTENCY_KEY,
    PROBLEM_MEDIA_TYPE,
    RESPONSE_HEADERS,
    ROUTES,
    STRIPE_SIGNATURE,
)
from api.problems import problem_type
from api.staff import roles_of
from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.payments import offline
from tests.api.conftest import SignedIn
from tests.factories import SmallEvent, make_event, make_signed_in_fan

# --- The rule -----------------------------------------------------------------------------

_DOCUMENTED_HEADERS = {name.lower(): name for name in RESPONSE_HEADERS}
# Problem types that only a route reading the named request header can answer.
_READ_BY_PROBLEM = {
    problem_type("idempotency-key-required"): IDEMPOTENCY_KEY,
    problem_type("idempotency-key-reused"): IDEMPOTENCY_KEY,
    problem_type("webhook-signature-invalid"): STRIPE_SIGNATURE,
    problem_type("webhook-timestamp-stale"): STRIPE_SIGNATURE,
    problem_type("admission-token-invalid"): ADMISSION_TOKEN,
    problem_type("admission-token-expired"): ADMISSION_TOKEN,
    problem_type("admission-token-other-fan"): ADMISSION_TOKEN,
    problem_type("admission-token-other-event"): ADMISSION_TOKEN,
    problem_type("admission-revoked"): ADMISSION_TOKEN,
}


@dataclass(frozen=True)
class Answer:
    """One answer as the client saw it, with its operation (method, OpenAPI path)."""

    method: str
    path: str
    status: int
    problem: str | None
    title: str | None
    headers: frozenset[str]

    def __str__(self) -> str:
        problem = f" {self.problem.rsplit('/', 1)[-1]}" if self.problem else ""
        return f"{self.method} {self.path} -> {self.status}{problem}"


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    while isinstance(node, Mapping) and "$ref" in node:
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            document = document[part]
        node = document
    return node


def _parameter(document: Mapping[str, Any], operation: Mapping[str, Any], name: str) -> Any:
    for parameter in operation.get("parameters") or ():
        resolved = _resolve(document, parameter)
        if resolved.get("in") == "header" and resolved.get("name", "").lower() == name.lower():
            return resolved
    return None


def undeclared(document: Mapping[str, Any], answer: Answer) -> list[str]:
    """What of ``answer`` its operation in ``document`` does not declare (empty: all is)."""
    operation = (document.get("paths", {}).get(answer.path) or {}).get(answer.method.lower())
    if operation is None:
        return [f"{answer}: the operation is not in the OpenAPI document"]
    responses = operation.get("responses") or {}
    response = responses.get(str(answer.status))
    if response is None and answer.status == 500:
        response = responses.get("default")
    if response is None:
        return [f"{answer}: status {answer.status} is not declared"]
    response = _resolve(document, response)
    found = []
    if answer.problem is not None:
        media = (response.get("content") or {}).get(PROBLEM_MEDIA_TYPE)
        examples = [
            _resolve(document, ex).get("value", {}) for ex in ((media or {}).get("examples") or {}).values()
        ]
        titles = {example.get("type"): example.get("title") for example in examples}
        if answer.problem not in titles:
            found.append(f"{answer}: type {answer.problem} is not among the declared {sorted(titles)}")
        elif titles[answer.problem] != answer.title:
            found.append(f"{answer}: title {answer.title!r}, declared {titles[answer.problem]!r}")
    declared = {
        name.lower(): _resolve(document, header) for name, header in (response.get("headers") or {}).items()
    }
    for name in answer.headers & _DOCUMENTED_HEADERS.keys():
        if name not in declared:
            found.append(f"{answer}: header {_DOCUMENTED_HEADERS[name]} is not declared")
    for name, header in declared.items():
        if header.get("required") and name not in answer.headers:
            found.append(f"{answer}: header {name} is declared required but missing")
    read = set()
    if answer.problem in _READ_BY_PROBLEM:
        read.add(_READ_BY_PROBLEM[answer.problem])
    if "idempotent-replayed" in answer.headers:
        read.add(IDEMPOTENCY_KEY)
    if answer.status == 304:
        read.add("If-None-Match")
    for name in sorted(read):
        parameter = _parameter(document, operation, name)
        if parameter is None:
            found.append(f"{answer}: the request header {name} it read is not declared")
        elif answer.problem == problem_type("idempotency-key-required") and not parameter.get("required"):
            found.append(f"{answer}: {name} is required but declared optional")
    return found


def document_of(app: Litestar) -> Mapping[str, Any] | None:
    """The app's OpenAPI document, when it is a Boxoffice API's (one with problem types)."""
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    schemas = document.get("components", {}).get("schemas") or {}
    return document if "Problem" in schemas else None


class AnswerRecorder:
    """Holds every answer of the session's Boxoffice apps to ``undeclared``: keeps what was
    undeclared (for the test that got it) and every distinct answer (``answers``)."""

    def __init__(self) -> None:
        self.answers: set[Answer] = set()
        self.failures: list[str] = []
        self._seen: list[Answer] = []
        self._views: dict[int, tuple[weakref.ref[Any], dict[str, Any], dict[tuple[str, str], Any]]] = {}
        self._lock = threading.Lock()

    def observe(
        self, app: Litestar, scope: Mapping[str, Any], status: int, headers: Iterable[bytes], body: bytes
    ) -> None:
        handler = scope.get("route_handler")
        path = scope.get("path_template")
        # No route (an unknown path, a method the path does not take), or one left out of
        # the document on purpose (the schema pages, the metrics scrape, docs assets).
        if handler is None or not path or not getattr(handler, "resolve_include_in_schema", lambda: False)():
            return
        document = self._document(app, str(scope.get("method")), str(path))
        if document is None:
            return
        names = frozenset(bytes(name).decode("latin-1").lower() for name in headers)
        problem = title = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = {}
            if isinstance(parsed, dict):
                problem, title = parsed.get("type"), parsed.get("title")
        answer = Answer(str(scope.get("method")), str(path), status, problem, title, names)
        try:
            found = undeclared(document, answer)
        except Exception as error:  # the answer has gone out: a fault here is the test's
            found = [f"{answer}: could not be checked: {error!r}"]
        with self._lock:
            self.answers.add(answer)
            self._seen.append(answer)
            self.failures += found

    def _document(self, app: Litestar, method: str, path: str) -> Mapping[str, Any] | None:
        """As much of the app's document as checking an answer of (method, path) reads:
        the operation, and the components it refers to. Rendering the whole document for
        every app a test starts would cost a good part of a second each."""
        openapi = app.plugins.get(OpenAPIPlugin).provide_openapi()
        components = openapi.components
        if "Problem" not in (components.schemas or {}):
            return None  # not a Boxoffice API
        with self._lock:
            view = self._views.get(id(openapi))
            if view is None or view[0]() is not openapi:
                rendered = {
                    kind: {name: item.to_schema() for name, item in (getattr(components, kind) or {}).items()}
                    for kind in ("examples", "headers", "parameters")
                }
                view = (weakref.ref(openapi), rendered, {})
                self._views[id(openapi)] = view
                weakref.finalize(openapi, self._views.pop, id(openapi), None)
        operations: dict[tuple[str, str], Any] = view[2]
        if (method, path) not in operations:
            item = (openapi.paths or {}).get(path)
            operation = getattr(item, method.lower(), None) if item is not None else None
            operations[(method, path)] = operation.to_schema() if operation is not None else None
        found = operations[(method, path)]
        paths = {path: {method.lower(): found}} if found is not None else {}
        return {"paths": paths, "components": view[1]}

    def mark(self) -> tuple[int, int]:
        with self._lock:
            return len(self.failures), len(self._seen)

    def since(self, mark: tuple[int, int]) -> list[str]:
        """What was undeclared since ``mark``."""
        with self._lock:
            return sorted(set(self.failures[mark[0] :]))

    def take(self, mark: tuple[int, int]) -> list[str]:
        """What was undeclared since ``mark``, reported by the caller, so no longer here."""
        with self._lock:
            found = sorted(set(self.failures[mark[0] :]))
            del self.failures[mark[0] :]
            return found

    def seen_since(self, mark: tuple[int, int]) -> list[Answer]:
        with self._lock:
            return self._seen[mark[1] :]

    def wrap(self, call: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``Litestar.__call__``, observing each HTTP answer as it leaves the app."""
        recorder = self

        async def observed(app: Litestar, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await call(app, scope, receive, send)
                return
            start: dict[str, Any] = {}
            chunks: list[bytes] = []

            async def keep(message: Any) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                    headers = dict(message.get("headers") or ())
                    start["problem"] = headers.get(b"content-type", b"").startswith(
                        PROBLEM_MEDIA_TYPE.encode()
                    )
                elif message["type"] == "http.response.body" and start.get("problem"):
                    chunks.append(message.get("body", b""))
                await send(message)

            try:
                await call(app, scope, receive, keep)
            finally:
                if "status" in start:
                    names = [name for name, _ in start.get("headers") or ()]
                    recorder.observe(app, scope, int(start["status"]), names, b"".join(chunks))

        return observed


# --- Driving every operation --------------------------------------------------------------

# Routes the app serves outside the document, on purpose: the document and docs pages
# themselves, their assets, and the Prometheus scrape.
UNDOCUMENTED_PREFIXES = ("/schema", "/metrics")
CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def operations(document: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method.upper() in ("GET", *CHANGING)
    }


def handlers(app: Litestar) -> dict[tuple[str, str], HTTPRouteHandler]:
    """Each (method, OpenAPI path) the app serves, with its handler (OPTIONS left out)."""
    found = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in handler.http_methods - {"OPTIONS", "HEAD"}:
                    found[(method, route.path_format)] = handler
    return found


@dataclass
class World:
    """An event on sale, a fan with a hold, an order and its ticket, a staff key of every
    role, a till's paid sale and an open one: something real for every route to act on."""

    event: SmallEvent
    fan: SignedIn
    leaving: SignedIn
    keys: dict[StaffRole, str]
    hold_id: str
    order_id: str
    ticket_id: str
    ticket_token: str
    pending_hold_id: str
    sale_id: str
    box_order_id: str
    box_ticket_id: str
    box_ticket_token: str
    open_sale_id: str
    spare_key: str

    def staff(self, role: StaffRole) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def _key() -> dict[str, str]:
    return {IDEMPOTENCY_KEY: uuid.uuid4().hex}


async def _signed_in(session: AsyncSession) -> SignedIn:
    fan_id, token = await make_signed_in_fan(session)
    return SignedIn(fan_id, "", token)


@pytest.fixture
async def world(api: AsyncTestClient[Litestar], session: AsyncSession) -> World:
    event = await make_event(session, seats=10, ga_capacity=5)
    fan, leaving = await _signed_in(session), await _signed_in(session)
    issued = {
        role: await create_key(session, f"{role.value}-{uuid.uuid4().hex[:6]}", role) for role in StaffRole
    }
    spare = await create_key(session, f"spare-{uuid.uuid4().hex[:6]}", StaffRole.GATE)
    await session.commit()
    keys = {role: key.secret for role, key in issued.items()}
    box = {"Authorization": f"Bearer {keys[StaffRole.BOX_OFFICE]}"}

    async def hold(seat: int, headers: dict[str, str], path: str = "/holds") -> str:
        body = {"event_id": str(event.event_id), "seat_ids": [event.seat_ids[seat]]}
        answer = await api.post(path, json=body, headers={**headers, **_key()})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def pay(hold_id: str, card: str) -> dict[str, Any]:
        paid = await api.post(
            f"/holds/{hold_id}/checkout",
            json={"provider": "offline", "card_number": card},
            headers=fan.headers,
        )
        assert paid.status_code == 200, paid.text
        return dict(paid.json())

    hold_id = await hold(0, fan.headers)
    order_id = (await pay(await hold(1, fan.headers), offline.SUCCESS))["order_id"]
    order = (await api.get(f"/orders/{order_id}", headers=fan.headers)).json()
    ticket_id = order["lines"][0]["ticket_id"]
    token = (await api.get(f"/tickets/{ticket_id}", headers=fan.headers)).json()["token"]
    pending_hold_id = await hold(2, fan.headers)
    assert (await pay(pending_hold_id, offline.TIMEOUT))["status"] == "pending"
    sale_id = await hold(3, box, "/staff/sales")
    paid = await api.post(
        f"/staff/sales/{sale_id}/payment", json={"method": "cash", "tendered_minor": 10**7}, headers=box
    )
    assert paid.status_code == 200, paid.text
    box_order_id, box_ticket_id = paid.json()["order"]["id"], paid.json()["ticket_ids"][0]
    box_ticket = (await api.get(f"/staff/tickets/{box_ticket_id}", headers=box)).json()
    return World(
        event=event,
        fan=fan,
        leaving=leaving,
        keys=keys,
        hold_id=hold_id,
        order_id=order_id,
        ticket_id=ticket_id,
        ticket_token=token,
        pending_hold_id=pending_hold_id,
        sale_id=sale_id,
        box_order_id=box_order_id,
        box_ticket_id=box_ticket_id,
        box_ticket_token=box_ticket["token"],
        open_sale_id=await hold(4, box, "/staff/sales"),
        spare_key=spare.name,
    )


@dataclass(frozen=True)
class Step:
    """A request that works (or, where nothing could, the answer that is right), and its status."""

    method: str
    path: str
    template: str
    expect: int
    headers: Mapping[str, str] | None = None
    json: Any = None
    params: Mapping[str, Any] | None = None


def _working_requests(w: World, seatmap_etag: str) -> list[Step]:
    """One request per operation, in an order where each finds its subject: those that end
    something (a hold, an order, a session) come after those that read it."""
    box, call, gate, admin = (w.staff(role) for role in (BOX, CALL, GATE, ADMIN))
    fan = w.fan.headers
    ev = str(w.event.event_id)
    hold_body = {"event_id": ev, "seat_ids": [w.event.seat_ids[5]]}
    sale_body = {"event_id": ev, "seat_ids": [w.event.seat_ids[6]]}
    now = dt.datetime.now(dt.UTC).isoformat()
    credentials = {"email": f"{uuid.uuid4().hex[:8]}@example.org", "password": "correct horse battery"}
    return [
        Step("GET", "/health", "/health", 200),
        Step("GET", "/ready", "/ready", 200),
        Step("GET", "/events", "/events", 200, params={"q": "test"}),
        Step("GET", f"/events/{ev}", "/events/{event_id}", 200),
        Step(
            "GET",
            f"/events/{ev}/seatmap",
            "/events/{event_id}/seatmap",
            304,
            {"If-None-Match": seatmap_etag},
        ),
        Step("GET", f"/events/{ev}/availability", "/events/{event_id}/availability", 200),
        Step("GET", "/ticket-key", "/ticket-key", 200),
        Step("GET", "/ticket-keys", "/ticket-keys", 200),
        Step("GET", "/.well-known/jwks.json", "/.well-known/jwks.json", 200),
        Step("POST", "/fans", "/fans", 201, _key(), credentials),
        Step("POST", "/sessions", "/sessions", 201, None, credentials),
        Step("GET", "/me", "/me", 200, fan),
        Step("POST", "/holds", "/holds", 201, {**fan, **_key()}, hold_body),
        Step("GET", f"/holds/{w.hold_id}", "/holds/{hold_id}", 200, fan),
        Step("POST", f"/holds/{w.hold_id}/renew", "/holds/{hold_id}/renew", 200, fan),
        Step(
            "POST",
            f"/holds/{w.hold_id}/checkout",
            "/holds/{hold_id}/checkout",
            400,
            fan,
            {"provider": "offline", "card_number": "12"},
        ),
        Step("GET", "/orders", "/orders", 200, fan),
        Step("GET", f"/orders/{w.order_id}", "/orders/{order_id}", 200, fan),
        Step("GET", f"/orders/{w.order_id}/tickets.pdf", "/orders/{order_id}/tickets.pdf", 200, fan),
        Step("GET", f"/tickets/{w.ticket_id}", "/tickets/{ticket_id}", 200, fan),
        Step("GET", f"/tickets/{w.ticket_id}/qr.svg", "/tickets/{ticket_id}/qr.svg", 200, fan),
        Step("GET", f"/tickets/{w.ticket_id}/ticket.pdf", "/tickets/{ticket_id}/ticket.pdf", 200, fan),
        Step(
            "POST",
            "/webhooks/stripe",
            "/webhooks/stripe",
            400,
            {STRIPE_SIGNATURE: "t=1,v1=00"},
            {"id": "evt_1"},
        ),
        Step("GET", "/staff/me", "/staff/me", 200, gate),
        Step("GET", "/staff/keys", "/staff/keys", 200, admin),
        Step("GET", "/staff/audit", "/staff/audit", 200, call),
        Step("GET", "/staff/events", "/staff/events", 200, box),
        Step("GET", f"/staff/events/{ev}/seatmap", "/staff/events/{event_id}/seatmap", 200, box),
        Step("POST", "/staff/sales", "/staff/sales", 201, box, sale_body),
        Step("GET", f"/staff/sales/{w.sale_id}", "/staff/sales/{hold_id}", 200, box),
        Step(
            "POST",
            f"/staff/sales/{w.open_sale_id}/payment",
            "/staff/sales/{hold_id}/payment",
            409,
            box,
            {"method": "cash", "tendered_minor": 0},
        ),
        Step("GET", f"/staff/orders/{w.box_order_id}", "/staff/orders/{order_id}", 200, box),
        Step("GET", f"/staff/tickets/{w.box_ticket_id}", "/staff/tickets/{ticket_id}", 200, box),
        Step(
            "GET", f"/staff/tickets/{w.box_ticket_id}/qr.svg", "/staff/tickets/{ticket_id}/qr.svg", 200, box
        ),
        Step(
            "GET",
            f"/staff/tickets/{w.box_ticket_id}/ticket.pdf",
            "/staff/tickets/{ticket_id}/ticket.pdf",
            200,
            box,
        ),
        Step("DELETE", f"/staff/sales/{w.open_sale_id}", "/staff/sales/{hold_id}", 200, box),
        Step("GET", "/staff/dashboard", "/staff/dashboard", 200, call),
        Step("GET", "/staff/holds", "/staff/holds", 200, call, params={"event_id": ev}),
        Step(
            "POST",
            "/staff/holds/release-expired",
            "/staff/holds/release-expired",
            200,
            call,
            {"event_id": ev},
        ),
        Step("GET", "/staff/orders/stuck", "/staff/orders/stuck", 200, call),
        Step(
            "POST",
            f"/staff/orders/{w.pending_hold_id}/reconcile",
            "/staff/orders/{hold_id}/reconcile",
            200,
            call,
        ),
        Step("POST", f"/staff/orders/{w.order_id}/refund", "/staff/orders/{order_id}/refund", 200, call),
        Step("GET", "/staff/refunds", "/staff/refunds", 200, call),
        Step("POST", f"/staff/refunds/{uuid.uuid4()}/retry", "/staff/refunds/{refund_id}/retry", 404, call),
        Step("POST", f"/staff/events/{ev}/pause", "/staff/events/{event_id}/pause", 200, call),
        Step("POST", f"/staff/events/{ev}/resume", "/staff/events/{event_id}/resume", 200, call),
        # The event has no waiting room: a fan has no queue to be in, and staff make one
        # (left disabled, so the holds here need no admission).
        Step("POST", f"/events/{ev}/queue", "/events/{event_id}/queue", 409, fan),
        Step("GET", f"/events/{ev}/queue/me", "/events/{event_id}/queue/me", 409, fan),
        Step("GET", f"/events/{ev}/queue/me/stream", "/events/{event_id}/queue/me/stream", 409, fan),
        Step("DELETE", f"/events/{ev}/queue/me", "/events/{event_id}/queue/me", 409, fan),
        Step("GET", f"/staff/events/{ev}/waiting-room", "/staff/events/{event_id}/waiting-room", 404, call),
        Step(
            "PUT",
            f"/staff/events/{ev}/waiting-room",
            "/staff/events/{event_id}/waiting-room",
            200,
            call,
            {"rate_per_minute": 600},
        ),
        Step("GET", f"/staff/events/{ev}/waiting-room", "/staff/events/{event_id}/waiting-room", 200, call),
        Step(
            "POST",
            f"/staff/events/{ev}/waiting-room/pause",
            "/staff/events/{event_id}/waiting-room/pause",
            200,
            call,
        ),
        Step(
            "POST",
            f"/staff/events/{ev}/waiting-room/resume",
            "/staff/events/{event_id}/waiting-room/resume",
            200,
            call,
        ),
        Step(
            "POST",
            "/staff/checkin",
            "/staff/checkin",
            200,
            gate,
            {"token": w.box_ticket_token, "gate": "north-1"},
        ),
        Step(
            "POST",
            "/staff/checkin/offline",
            "/staff/checkin/offline",
            200,
            gate,
            {"gate": "north-2", "scans": [{"token": w.ticket_token, "scanned_at": now}]},
        ),
        Step("GET", "/staff/checkin/conflicts", "/staff/checkin/conflicts", 200, call),
        Step("GET", "/staff/queues", "/staff/queues", 200, call),
        Step("GET", "/staff/jobs/failed", "/staff/jobs/failed", 200, call),
        Step("POST", "/staff/jobs/no-such-job/requeue", "/staff/jobs/{job_id}/requeue", 404, call),
        Step("POST", "/staff/jobs/requeue-failed", "/staff/jobs/requeue-failed", 200, call, {}),
        Step("DELETE", "/staff/jobs/no-such-job", "/staff/jobs/{job_id}", 404, call),
        Step("DELETE", f"/staff/keys/{w.spare_key}", "/staff/keys/{name}", 204, admin),
        Step("POST", f"/staff/holds/{w.hold_id}/release", "/staff/holds/{hold_id}/release", 200, call),
        Step("DELETE", f"/holds/{w.hold_id}", "/holds/{hold_id}", 200, fan),
        Step("POST", f"/orders/{w.order_id}/cancel", "/orders/{order_id}/cancel", 200, fan),
        Step("DELETE", "/sessions/current", "/sessions/current", 204, w.leaving.headers),
        Step("DELETE", "/sessions", "/sessions", 204, fan),
    ]


BOX, CALL, GATE, ADMIN = StaffRole.BOX_OFFICE, StaffRole.ON_CALL, StaffRole.GATE, StaffRole.ADMIN


def _fill(template: str) -> str:
    """``template`` with ids that name nothing: uuids, or a word for a text parameter."""
    path = template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        name = path[start + 1 : end]
        value = f"no-such-{uuid.uuid4().hex[:8]}" if name in ("name", "job_id") else str(uuid.uuid4())
        path = path[:start] + value + path[end + 1 :]
    return path


def _callers(w: World, handler: HTTPRouteHandler) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """Who may call the route (None: anyone) and, for a staff route, a role that may not."""
    schemes = {scheme for requirement in handler.resolve_security() for scheme in requirement}
    if STAFF_BEARER in schemes:
        admitted = roles_of(handler.opt)
        refused = next((role for role in StaffRole if role not in admitted), None)
        allowed = next((role for role in StaffRole if role in admitted and role != ADMIN), ADMIN)
        return w.staff(allowed), w.staff(refused) if refused else None
    if BEARER in schemes:
        return w.fan.headers, None
    return None, None


@pytest.fixture
def document(api: AsyncTestClient[Litestar]) -> Mapping[str, Any]:
    found = document_of(api.app)
    assert found is not None
    return found


async def test_every_served_route_is_documented_or_deliberately_not(
    api: AsyncTestClient[Litestar], document: Mapping[str, Any]
) -> None:
    served = set(handlers(api.app))
    documented = {(method, path) for method, path in served if not path.startswith(UNDOCUMENTED_PREFIXES)}
    assert documented == operations(document)


def test_every_operation_says_what_its_services_raise(document: Mapping[str, Any]) -> None:
    # A route added without an entry, or an entry left behind by a route that went.
    assert set(ROUTES) == operations(document)


async def test_the_document_is_valid_openapi_3_1(api: AsyncTestClient[Litestar]) -> None:
    # Imported here: every test session imports this module, for the recorder.
    import schemathesis

    raw = (await api.get("/schema/openapi.json")).json()
    assert raw["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(raw).validate()
    # Every reference resolves: to a schema, example, header or parameter the document has.
    refs = re.findall(r'"\$ref":\s*"([^"]+)"', json.dumps(raw))
    for ref in set(refs):
        _resolve(raw, {"$ref": ref})


def test_each_example_is_the_body_of_its_problem_type(document: Mapping[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                media = (_resolve(document, response).get("content") or {}).get(PROBLEM_MEDIA_TYPE)
                for code, example in ((media or {}).get("examples") or {}).items():
                    body = _resolve(document, example)["value"]
                    assert body["type"] == problem_type(code), (method, path, status)
                    assert str(body["status"]) == ("500" if status == "default" else status), (
                        method,
                        path,
                        code,
                    )
                    assert body["title"], (method, path, code)


async def test_every_operation_answers_only_what_it_declares(
    api: AsyncTestClient[Litestar],
    world: World,
    document: Mapping[str, Any],
    openapi_answers: AnswerRecorder,
) -> None:
    mark = openapi_answers.mark()
    served = handlers(api.app)
    bodies = {(step.method, step.template): step.json for step in _working_requests(world, "")}
    # Each operation anonymously, with a staff role it refuses, with ids that name nothing,
    # and with input it cannot take (a body of the wrong shape, a page size of 0): none of
    # that changes anything, so it runs before the requests that work.
    for method, path in sorted(operations(document)):
        allowed, refused = _callers(world, served[(method, path)])
        body = bodies.get((method, path))
        tries: list[tuple[dict[str, str] | None, Any, dict[str, Any]]] = [({}, body, {}), (refused, body, {})]
        if "{" in path:
            tries.append((allowed or {}, body, {}))
        if body is not None:
            tries.append((allowed or {}, [body], {}))
        parameters = [
            _resolve(document, p) for p in document["paths"][path][method.lower()].get("parameters", ())
        ]
        if any(p.get("in") == "query" and p.get("name") == "limit" for p in parameters):
            tries.append((allowed or {}, None, {"limit": 0}))
        for headers, sent, params in tries:
            if headers is not None:
                # A key of its own each: one key with another body would be 422.
                keyed = _key() if method in CHANGING else {}
                target = _fill(path)
                answer = await api.request(
                    method, target, json=sent, params=params, headers={**headers, **keyed}
                )
                assert answer.status_code < 500, (method, path, answer.text)
    seatmap = await api.get(f"/events/{world.event.event_id}/seatmap")
    assert seatmap.status_code == 200
    for step in _working_requests(world, seatmap.headers["etag"]):
        answer = await api.request(
            step.method, step.path, json=step.json, params=step.params, headers=dict(step.headers or {})
        )
        assert answer.status_code == step.expect, (step.method, step.path, answer.text)
    assert openapi_answers.take(mark) == []
    driven = {(answer.method, answer.path) for answer in openapi_answers.seen_since(mark)}
    assert operations(document) - driven == set()


async def test_an_idempotency_key_is_declared_exactly_where_it_is_honoured(
    api: AsyncTestClient[Litestar], document: Mapping[str, Any]
) -> None:
    wrong = []
    for method, path in sorted(operations(document)):
        if method not in CHANGING:
            continue
        operation = document["paths"][path][method.lower()]
        declared = _parameter(document, operation, IDEMPOTENCY_KEY)
        target, body = _fill(path), None if method == "DELETE" else {}
        key = _key()
        first = await api.request(method, target, json=body, headers=key)
        again = await api.request(method, target, json=body, headers=key)
        assert first.status_code < 500, (method, path)
        assert again.status_code < 500, (method, path)
        replayed = again.headers.get("idempotent-replayed") == "true"
        if replayed != (declared is not None):
            wrong.append(f"{method} {path}: replayed {replayed}, declared {declared is not None}")
        unkeyed = await api.request(method, target, json=body)
        refused = unkeyed.headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE) and unkeyed.json()[
            "type"
        ] == problem_type("idempotency-key-required")
        if refused != bool(declared and declared.get("required")):
            wrong.append(f"{method} {path}: refused without a key {refused}, declared required {declared}")
    assert wrong == []


async def test_a_body_too_large_for_its_key_is_declared(api: AsyncTestClient[Litestar]) -> None:
    answer = await api.post("/holds", content=b"{" + b" " * MAX_BODY + b"}", headers=_key())
    assert answer.status_code == 413
    assert answer.json()["type"] == problem_type("body-too-large")
