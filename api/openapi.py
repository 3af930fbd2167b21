"""The OpenAPI document says what the API does, and its docs page works offline.

Litestar generates each operation's parameters and success responses from the handlers.
``document_problems`` then adds, once at start-up, what the handlers cannot say for
themselves:

- every problem type an operation can answer, grouped by status code, each response with
  the ``Problem`` schema and one example body per type (``examples``, keyed by the code);
- the request headers it reads: ``Idempotency-Key`` wherever ``api.idempotency`` honours one
  (required where the route demands it), ``X-Request-ID`` everywhere, and any a route reads
  itself (``ROUTES``' ``reads``);
- the response headers it sends: ``Retry-After`` on every 429 and 503, ``Idempotent-Replayed``
  on the answers a key can replay, ``X-Request-ID`` on every answer, ``RateLimit-Policy`` on
  a rate-limited route's (and ``RateLimit`` on its 429), and a route's own
  (``ROUTES``' ``headers``: the seat map's ``ETag`` and ``Boxoffice-Degraded``, ...).

Most of this is derived from what each handler declares: its security (401, and 403 for
staff keys), its parameters and body (400), its ``idempotency_key`` policy, whether it
reaches a database or Redis (503 ``unavailable``), the in-flight bound (503
``overloaded``) and its ``rate_limit`` (429 ``rate-limited``). Only the domain errors its
service raises are listed by hand, in ``ROUTES``, keyed by method and path.
``tests/api/test_openapi_contract.py`` fails for an operation missing from ``ROUTES`` and for
any answer the test suite sees that the document does not declare.

The docs UI (Swagger UI, at ``/schema``) is served from a copy shipped in ``api/static``,
so it works without internet access.
"""

from __future__ import annotations

import dataclasses
import http
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.router import Router
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router

from api.admission import ADMISSION_TOKEN
from api.auth import BEARER, STAFF_BEARER
from api.idempotency import METHODS as KEYED_METHODS
from api.overload import EXEMPT as NOT_BOUNDED
from api.problems import OVERLOADED, problem_type
from api.rate_limits import OPT as RATE_LIMIT_OPT
from api.request_id import MAX_LENGTH as REQUEST_ID_MAX_LENGTH
from api.routes.availability import DEGRADED_HEADER
from api.routes.orders import KEY_ID_HEADER
from booking import errors as e
from booking.idempotency import KEY_PATTERN
from booking.waiting_room.tokens import MAX_TOKEN_CHARS as ADMISSION_TOKEN_MAX_LENGTH

PROBLEM_MEDIA_TYPE = "application/problem+json"

PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    description=(
        "RFC 9457 problem details. `type` is stable per error (the examples of each response "
        "list the types it can be); extra members carry details, such as `errors` for a "
        "request that fails validation or `seat_ids` for seats already taken."
    ),
    properties={
        "type": Schema(type=OpenAPIType.STRING, description="https://boxoffice.dev/problems/<code>"),
        "title": Schema(type=OpenAPIType.STRING, description="The same for every problem of a type"),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING, description="What happened in this case"),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            description="For `invalid-request`: each parameter or field that is not valid",
            items=Schema(
                type=OpenAPIType.OBJECT,
                properties={
                    "key": Schema(type=OpenAPIType.STRING),
                    "message": Schema(type=OpenAPIType.STRING),
                    "source": Schema(type=OpenAPIType.STRING),
                },
            ),
        ),
    },
    required=["type", "title", "status"],
)

# --- Headers ------------------------------------------------------------------------------

IDEMPOTENCY_KEY = "Idempotency-Key"
REQUEST_ID = "X-Request-ID"
STRIPE_SIGNATURE = "Stripe-Signature"
RETRY_AFTER = "Retry-After"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"
ETAG = "ETag"
CACHE_CONTROL = "Cache-Control"
CONTENT_DISPOSITION = "Content-Disposition"
RATELIMIT = "RateLimit"
RATELIMIT_POLICY = "RateLimit-Policy"

_TEXT = Schema(type=OpenAPIType.STRING)

# Every header here that an answer carries must be declared on that answer's response, and
# one declared required must be there (tests/api/test_openapi_contract.py holds both ways).
RESPONSE_HEADERS: dict[str, OpenAPIHeader] = {
    REQUEST_ID: OpenAPIHeader(
        schema=_TEXT,
        required=True,
        description="The request's id, in every log line about it: the client's own if sane, else a new one.",
    ),
    RETRY_AFTER: OpenAPIHeader(
        schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
        required=True,
        description="Seconds to wait before trying again.",
    ),
    IDEMPOTENT_REPLAYED: OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
        description="`true` when this is the stored answer to an earlier request with this Idempotency-Key.",
    ),
    DEGRADED_HEADER: OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING, enum=["redis-unavailable"]),
        description="Set while the cache is unreachable: the answer was built from the database.",
    ),
    ETAG: OpenAPIHeader(schema=_TEXT, required=True, description="Send it back in If-None-Match."),
    CACHE_CONTROL: OpenAPIHeader(schema=_TEXT, description="`no-cache`: revalidate with the ETag."),
    CONTENT_DISPOSITION: OpenAPIHeader(schema=_TEXT, description="`inline`, with a file name."),
    KEY_ID_HEADER: OpenAPIHeader(
        schema=_TEXT, required=True, description="The key's id, as the ticket codes it signs name it."
    ),
    # draft-ietf-httpapi-ratelimit-headers (-10): structured-field lists, one item a policy.
    RATELIMIT: OpenAPIHeader(
        schema=_TEXT,
        description="On a `rate-limited` answer, the policy refused and when it has room again: "
        '`"hold-per-fan";r=0;t=42` (r: requests left, t: seconds).',
    ),
    RATELIMIT_POLICY: OpenAPIHeader(
        schema=_TEXT,
        description="While rate limits are on, the route's limits: "
        '`"hold-per-address";q=60;w=60, "hold-per-fan";q=10;w=60` (q requests per w seconds, '
        "per client address or per signed-in fan).",
    ),
}

# The request headers routes read beyond their own declared parameters (the Authorization
# header is the security schemes'), as reusable parameters by component name.
_KEY_SCHEMA = Schema(
    type=OpenAPIType.STRING,
    min_length=1,
    max_length=255,
    pattern=KEY_PATTERN.pattern,
    description="Printable ASCII, e.g. a UUID",
)
_KEY_DESCRIPTION = (
    "A unique key per intended action, scoped to the caller. Retrying with the same key and body "
    "returns the stored answer (with `Idempotent-Replayed: true`); the same key with another body "
    "answers 422 `idempotency-key-reused`, and while the first request runs 409 "
    "`idempotency-key-in-progress`. Kept 24 hours."
)
REQUEST_HEADERS: dict[str, tuple[str, Parameter]] = {
    "IdempotencyKey": (
        IDEMPOTENCY_KEY,
        Parameter(name=IDEMPOTENCY_KEY, param_in="header", schema=_KEY_SCHEMA, description=_KEY_DESCRIPTION),
    ),
    "IdempotencyKeyRequired": (
        IDEMPOTENCY_KEY,
        Parameter(
            name=IDEMPOTENCY_KEY,
            param_in="header",
            schema=_KEY_SCHEMA,
            required=True,
            description=_KEY_DESCRIPTION + " Without one: 400 `idempotency-key-required`.",
        ),
    ),
    "RequestId": (
        REQUEST_ID,
        Parameter(
            name=REQUEST_ID,
            param_in="header",
            schema=Schema(type=OpenAPIType.STRING, max_length=REQUEST_ID_MAX_LENGTH),
            description=(
                "Your id for the request, echoed in the answer and logged: kept when it is 1 to "
                "128 characters of `A-Z a-z 0-9 . _ : -`, replaced by a new one otherwise."
            ),
            example="checkout-7f3a9c",
        ),
    ),
    "StripeSignature": (
        STRIPE_SIGNATURE,
        Parameter(
            name=STRIPE_SIGNATURE,
            param_in="header",
            schema=_TEXT,
            required=True,
            description="Stripe's signature of the raw body (`t=...,v1=...`).",
        ),
    ),
    "AdmissionToken": (
        ADMISSION_TOKEN,
        Parameter(
            name=ADMISSION_TOKEN,
            param_in="header",
            schema=Schema(type=OpenAPIType.STRING, max_length=ADMISSION_TOKEN_MAX_LENGTH),
            description=(
                "Your admission from the event's waiting room (`admission.token` of "
                "`GET /events/{event_id}/queue/me`): needed while the event sells through one, "
                "ignored otherwise."
            ),
        ),
    ),
}
_PARAMETER_OF_HEADER = {
    header: name for name, (header, _) in REQUEST_HEADERS.items() if name != "IdempotencyKey"
}


# --- Problem types ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemDoc:
    """A problem type as an answer shows it: its status, code, title, and one example body."""

    status: int
    code: str
    title: str
    detail: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, error: e.BookingError) -> ProblemDoc:
        """As ``api.problems`` renders ``error``: its extra members are part of the body."""
        return cls(error.status, error.code, error.title, error.detail, dict(error.extra))

    @property
    def type(self) -> str:
        return problem_type(self.code)

    @property
    def body(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


# The API layer's own problems (api/problems.py, api/idempotency.py, api/overload.py).
INVALID_REQUEST = ProblemDoc(
    400,
    "invalid-request",
    "The request is not valid",
    "Validation failed for GET /events?limit=0",
    {"errors": [{"message": "Expected `int` >= 1", "key": "limit", "source": "query"}]},
)
IDEMPOTENCY_KEY_REQUIRED = ProblemDoc(
    400,
    "idempotency-key-required",
    "This request needs an Idempotency-Key header",
    "Send a unique key (e.g. a UUID) per intended action, and the same key when retrying it.",
)
BODY_TOO_LARGE = ProblemDoc(413, "body-too-large", "The request body is too large", "")
OVERLOADED_PROBLEM = ProblemDoc(503, *OVERLOADED)
UNAVAILABLE = ProblemDoc(503, "unavailable", "Service temporarily unavailable", "Try again in a few seconds.")
INTERNAL_ERROR = ProblemDoc(500, "internal-error", "Internal error", "Internal error")

# Example bodies of the domain errors whose details are built from what happened.
_SAMPLES: dict[type[e.BookingError], ProblemDoc] = {
    e.InvalidRequest: INVALID_REQUEST,
    e.InvalidCursor: ProblemDoc.of(e.InvalidCursor("eyJ...")),
    e.UnknownSeats: ProblemDoc.of(e.UnknownSeats([1042])),
    e.SeatsTaken: ProblemDoc.of(e.SeatsTaken([1042, 1043])),
    e.NotEnoughLeft: ProblemDoc.of(e.NotEnoughLeft(2)),
    e.TicketCapReached: ProblemDoc.of(e.TicketCapReached(6, 5)),
    e.HoldStateConflict: ProblemDoc.of(e.HoldStateConflict("released", "renew")),
    e.SaleNotOpen: ProblemDoc.of(e.SaleNotOpen("Sale status: paused.")),
    e.InventoryBusy: ProblemDoc.of(e.InventoryBusy()),
    e.PaymentNotRecordedYet: ProblemDoc.of(e.PaymentNotRecordedYet()),
    e.PaymentProviderUnreachable: ProblemDoc.of(
        e.PaymentProviderUnreachable("Stripe could not be asked about the event: timed out")
    ),
    e.PaymentProviderUnavailable: ProblemDoc.of(e.PaymentProviderUnavailable("Offered here: offline.")),
    e.CashShort: ProblemDoc.of(
        e.CashShort(
            total="40.00 GBP",
            tendered="30.00 GBP",
            short="10.00 GBP",
            total_minor=4000,
            tendered_minor=3000,
            shortfall_minor=1000,
            currency="GBP",
        )
    ),
    e.SaleSeatsGone: ProblemDoc.of(e.SaleSeatsGone()),
    e.RateLimited: ProblemDoc.of(e.RateLimited("hold-per-fan", 42)),
    e.LoginBackoff: ProblemDoc.of(e.LoginBackoff(60)),
    e.PaymentProviderPaused: ProblemDoc.of(e.PaymentProviderPaused(24, "2026-12-05T19:04:31.512034+00:00")),
    e.TiersInvalid: ProblemDoc.of(
        e.TiersInvalid(["480 seats of section 'Circle' are priced by no tier (rows A, B, C, ...)"])
    ),
    e.EventStateConflict: ProblemDoc.of(e.EventStateConflict("take off sale", "draft", "draft")),
    e.EventNotReady: ProblemDoc.of(e.EventNotReady(["it has no price tiers: set them first"])),
}


def problem_of(error: type[e.BookingError]) -> ProblemDoc:
    """The documented form of a domain error class: its sample, or an instance made with
    no arguments, or (an error that needs some, without a sample) its title as the detail."""
    if (sample := _SAMPLES.get(error)) is not None:
        return sample
    try:
        return ProblemDoc.of(error())
    except TypeError:
        return ProblemDoc(error.status, error.code, error.title, error.title)


# --- What each route raises ---------------------------------------------------------------


@dataclass(frozen=True)
class RouteDoc:
    """What a route's handler cannot declare itself: the domain errors its services raise,
    the response headers it sets by status, and the request headers it reads directly."""

    raises: tuple[type[e.BookingError], ...] = ()
    headers: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    reads: tuple[str, ...] = ()


_HOLD_CLAIM = (
    e.InvalidRequest,
    e.EventNotFound,
    e.SaleNotOpen,
    e.TierNotFound,
    e.UnknownSeats,
    e.SeatsTaken,
    e.SoldOut,
    e.NotEnoughLeft,
    e.InventoryBusy,
)
# The waiting room's gate on holds and checkouts (api.admission).
_ADMISSION = (
    e.AdmissionRequired,
    e.AdmissionTokenInvalid,
    e.AdmissionTokenExpired,
    e.AdmissionTokenOtherFan,
    e.AdmissionTokenOtherEvent,
    e.AdmissionRevoked,
    e.WaitingRoomUnavailable,
)
_QUEUE = (e.EventNotFound, e.WaitingRoomNotActive, e.NotInQueue, e.WaitingRoomUnavailable)
_ROOM = (e.EventNotFound, e.RoomNotConfigured)
_PDF = {200: (CONTENT_DISPOSITION,)}
_SEATMAP = {200: (ETAG, CACHE_CONTROL, DEGRADED_HEADER), 304: (ETAG, CACHE_CONTROL, DEGRADED_HEADER)}
_WEBHOOK = (
    e.PaymentProviderUnavailable,
    e.WebhookSignatureInvalid,
    e.WebhookTimestampStale,
    e.WebhookPayloadMalformed,
    e.PaymentProviderUnreachable,
    e.PaymentNotRecordedYet,
    e.IdempotencyKeyInProgress,
    e.InventoryBusy,
)

_EVENT_MOVE = (e.EventNotFound, e.EventStateConflict, e.InventoryBusy)
_EVENT_EDIT = (*_EVENT_MOVE, e.InvalidRequest)

# (method, OpenAPI path) -> what the route adds to the derived answers. Every documented
# operation has an entry, even an empty one: the contract test fails for one missing.
ROUTES: dict[tuple[str, str], RouteDoc] = {
    ("GET", "/health"): RouteDoc(),
    ("GET", "/ready"): RouteDoc(),
    ("GET", "/events"): RouteDoc((e.InvalidRequest, e.InvalidCursor)),
    ("GET", "/events/{event_id}"): RouteDoc((e.EventNotFound,)),
    ("GET", "/events/{event_id}/seatmap"): RouteDoc((e.EventNotFound,), headers=_SEATMAP),
    ("GET", "/events/{event_id}/availability"): RouteDoc((e.EventNotFound,)),
    ("GET", "/ticket-key"): RouteDoc(headers={200: (KEY_ID_HEADER,)}),
    ("GET", "/ticket-keys"): RouteDoc(),
    ("GET", "/.well-known/jwks.json"): RouteDoc(),
    ("POST", "/fans"): RouteDoc((e.InvalidRequest, e.EmailTaken)),
    ("POST", "/sessions"): RouteDoc((e.InvalidCredentials, e.LoginBackoff)),
    ("DELETE", "/sessions/current"): RouteDoc(),
    ("DELETE", "/sessions"): RouteDoc(),
    ("GET", "/me"): RouteDoc(),
    ("POST", "/holds"): RouteDoc((*_HOLD_CLAIM, e.TicketCapReached, *_ADMISSION), reads=(ADMISSION_TOKEN,)),
    ("GET", "/holds/{hold_id}"): RouteDoc((e.HoldNotFound,)),
    ("DELETE", "/holds/{hold_id}"): RouteDoc((e.HoldNotFound, e.HoldStateConflict, e.InventoryBusy)),
    ("POST", "/holds/{hold_id}/renew"): RouteDoc(
        (e.HoldNotFound, e.HoldExpired, e.HoldStateConflict, e.RenewalLimit, e.InventoryBusy)
    ),
    ("POST", "/holds/{hold_id}/checkout"): RouteDoc(
        (
            e.InvalidRequest,
            e.PaymentProviderUnavailable,
            e.HoldNotFound,
            e.HoldExpired,
            e.HoldStateConflict,
            e.InventoryBusy,
            e.PaymentProviderPaused,
            *_ADMISSION,
        ),
        reads=(ADMISSION_TOKEN,),
    ),
    ("GET", "/orders"): RouteDoc(),
    ("GET", "/orders/{order_id}"): RouteDoc((e.OrderNotFound,)),
    ("GET", "/orders/{order_id}/tickets.pdf"): RouteDoc(
        (e.TicketLinkInvalid, e.OrderNotFound, e.TicketRevoked), headers=_PDF
    ),
    ("POST", "/orders/{order_id}/cancel"): RouteDoc((e.OrderNotFound, e.CancellationClosed, e.InventoryBusy)),
    ("GET", "/tickets/{ticket_id}"): RouteDoc((e.TicketNotFound,)),
    ("GET", "/tickets/{ticket_id}/qr.svg"): RouteDoc((e.TicketNotFound, e.TicketRevoked)),
    ("GET", "/tickets/{ticket_id}/ticket.pdf"): RouteDoc((e.TicketNotFound,), headers=_PDF),
    ("POST", "/webhooks/stripe"): RouteDoc(_WEBHOOK, reads=(STRIPE_SIGNATURE,)),
    ("GET", "/staff/me"): RouteDoc(),
    ("GET", "/staff/keys"): RouteDoc(),
    ("DELETE", "/staff/keys/{name}"): RouteDoc((e.StaffKeyNotFound,)),
    ("GET", "/staff/audit"): RouteDoc(),
    ("GET", "/staff/events"): RouteDoc((e.InvalidRequest, e.InvalidCursor)),
    ("GET", "/staff/events/{event_id}/seatmap"): RouteDoc((e.EventNotFound,)),
    ("POST", "/staff/sales"): RouteDoc(_HOLD_CLAIM),
    ("GET", "/staff/sales/{hold_id}"): RouteDoc((e.HoldNotFound,)),
    ("DELETE", "/staff/sales/{hold_id}"): RouteDoc((e.HoldNotFound, e.HoldStateConflict, e.InventoryBusy)),
    ("POST", "/staff/sales/{hold_id}/payment"): RouteDoc(
        (e.InvalidRequest, e.HoldNotFound, e.HoldStateConflict, e.CashShort, e.SaleSeatsGone, e.InventoryBusy)
    ),
    ("GET", "/staff/orders/{order_id}"): RouteDoc((e.OrderNotFound,)),
    ("GET", "/staff/tickets/{ticket_id}"): RouteDoc((e.TicketNotFound,)),
    ("GET", "/staff/tickets/{ticket_id}/qr.svg"): RouteDoc((e.TicketNotFound, e.TicketRevoked)),
    ("GET", "/staff/tickets/{ticket_id}/ticket.pdf"): RouteDoc((e.TicketNotFound,), headers=_PDF),
    ("GET", "/staff/dashboard"): RouteDoc(),
    ("GET", "/staff/holds"): RouteDoc((e.InvalidRequest,)),
    ("POST", "/staff/holds/{hold_id}/release"): RouteDoc(
        (e.HoldNotFound, e.HoldAlreadyEnded, e.HoldBeingPaid, e.HoldStateConflict, e.InventoryBusy)
    ),
    ("POST", "/staff/holds/release-expired"): RouteDoc((e.EventNotFound, e.InvalidRequest)),
    ("GET", "/staff/orders/stuck"): RouteDoc((e.InvalidRequest,)),
    ("POST", "/staff/orders/{hold_id}/reconcile"): RouteDoc(
        (
            e.HoldNotFound,
            e.NothingToReconcile,
            e.PaymentProviderUnavailable,
            e.PaymentProviderUnreachable,
            e.InventoryBusy,
        )
    ),
    ("GET", "/staff/refunds"): RouteDoc(),
    ("POST", "/staff/refunds/{refund_id}/retry"): RouteDoc((e.RefundNotFound, e.RefundNotFailed)),
    ("POST", "/staff/orders/{order_id}/refund"): RouteDoc(
        (e.OrderNotFound, e.OrderNotRefundable, e.InventoryBusy)
    ),
    ("POST", "/staff/events/{event_id}/pause"): RouteDoc(
        (e.EventNotFound, e.SaleStateConflict, e.InventoryBusy)
    ),
    ("POST", "/staff/events/{event_id}/resume"): RouteDoc(
        (e.EventNotFound, e.SaleStateConflict, e.InventoryBusy)
    ),
    ("POST", "/staff/checkin"): RouteDoc(
        (
            e.InvalidRequest,
            e.TicketTokenMalformed,
            e.TicketSignatureInvalid,
            e.TicketKeyUnknown,
            e.TicketNotFound,
        )
    ),
    ("POST", "/staff/checkin/offline"): RouteDoc((e.InvalidRequest,)),
    ("GET", "/staff/checkin/conflicts"): RouteDoc(),
    ("GET", "/staff/queues"): RouteDoc(),
    ("GET", "/staff/jobs/failed"): RouteDoc((e.UnknownQueue,)),
    ("POST", "/staff/jobs/{job_id}/requeue"): RouteDoc((e.JobNotFound, e.JobNotFailed)),
    ("POST", "/staff/jobs/requeue-failed"): RouteDoc((e.UnknownQueue,)),
    ("DELETE", "/staff/jobs/{job_id}"): RouteDoc((e.JobNotFound, e.JobNotFailed)),
    ("GET", "/events/{event_id}/seatmap/stream"): RouteDoc(
        (e.EventNotFound, e.SeatmapStreamUnavailable), headers={200: (CACHE_CONTROL,)}
    ),
    ("POST", "/events/{event_id}/queue"): RouteDoc(
        (e.EventNotFound, e.WaitingRoomNotActive, e.WaitingRoomNotOpen, e.WaitingRoomUnavailable)
    ),
    ("GET", "/events/{event_id}/queue/me"): RouteDoc(_QUEUE),
    ("DELETE", "/events/{event_id}/queue/me"): RouteDoc(_QUEUE),
    ("GET", "/events/{event_id}/queue/me/stream"): RouteDoc(_QUEUE, headers={200: (CACHE_CONTROL,)}),
    ("GET", "/staff/events/{event_id}/waiting-room"): RouteDoc(_ROOM),
    ("PUT", "/staff/events/{event_id}/waiting-room"): RouteDoc(
        (e.InvalidRequest, e.EventNotFound, e.RoomStateConflict)
    ),
    ("POST", "/staff/events/{event_id}/waiting-room/pause"): RouteDoc((*_ROOM, e.RoomStateConflict)),
    ("POST", "/staff/events/{event_id}/waiting-room/resume"): RouteDoc((*_ROOM, e.RoomStateConflict)),
    ("GET", "/staff/catalog/venues"): RouteDoc(),
    ("GET", "/staff/catalog/events"): RouteDoc((e.InvalidRequest,)),
    ("POST", "/staff/catalog/events"): RouteDoc(
        (e.InvalidRequest, e.VenueNotFound, e.LayoutNotFound, e.EventSlugTaken, e.TiersInvalid)
    ),
    ("GET", "/staff/catalog/events/{event_id}"): RouteDoc((e.EventNotFound,)),
    ("PATCH", "/staff/catalog/events/{event_id}"): RouteDoc(_EVENT_EDIT),
    ("PUT", "/staff/catalog/events/{event_id}/tiers"): RouteDoc(
        (*_EVENT_EDIT, e.TiersLocked, e.TiersInvalid)
    ),
    ("PATCH", "/staff/catalog/events/{event_id}/prices"): RouteDoc((*_EVENT_EDIT, e.PriceTierNotFound)),
    ("POST", "/staff/catalog/events/{event_id}/on-sale"): RouteDoc((*_EVENT_MOVE, e.EventNotReady)),
    ("POST", "/staff/catalog/events/{event_id}/off-sale"): RouteDoc(_EVENT_MOVE),
    ("POST", "/staff/catalog/events/{event_id}/cancel"): RouteDoc(_EVENT_MOVE),
}

# --- Derived from the handler -------------------------------------------------------------

# The handler parameters that reach PostgreSQL (or Redis, for the staff job routes).
_SERVER_DEPENDENCIES = frozenset({"db_session", "fan", "staff"})


def idempotency_of(handler: HTTPRouteHandler, method: str) -> Literal["required", "optional"] | None:
    """Whether ``api.idempotency`` honours an ``Idempotency-Key`` on this route and method,
    and whether it demands one: the middleware's own rule, on the handler's policy."""
    policy = handler.opt.get("idempotency_key")
    if method not in KEYED_METHODS or policy in ("natural", "unstored"):
        return None
    return "required" if policy == "required" else "optional"


def _schemes(handler: HTTPRouteHandler) -> set[str]:
    return {scheme for requirement in handler.resolve_security() for scheme in requirement}


def problems_of(handler: HTTPRouteHandler, method: str, path: str, operation: Operation) -> list[ProblemDoc]:
    """Every problem type the operation can answer, the route's own first, one per code."""
    keyed = idempotency_of(handler, method)
    found = [problem_of(error) for error in ROUTES.get((method, path), RouteDoc()).raises]
    if operation.parameters or operation.request_body or keyed or "400" in (operation.responses or {}):
        found.append(INVALID_REQUEST)
    schemes = _schemes(handler)
    if schemes & {BEARER, STAFF_BEARER}:
        found.append(problem_of(e.NotAuthenticated))
    if STAFF_BEARER in schemes:
        found.append(problem_of(e.Forbidden))
    if keyed is not None:
        if keyed == "required":
            found.append(IDEMPOTENCY_KEY_REQUIRED)
        found += [problem_of(e.IdempotencyKeyInProgress), problem_of(e.IdempotencyKeyReused), BODY_TOO_LARGE]
    if handler.opt.get(RATE_LIMIT_OPT) is not None:
        found.append(problem_of(e.RateLimited))
    if path not in NOT_BOUNDED:
        found.append(OVERLOADED_PROBLEM)
    if keyed is not None or _SERVER_DEPENDENCIES & set(handler.parsed_fn_signature.parameters):
        found.append(UNAVAILABLE)
    unique: dict[str, ProblemDoc] = {}
    for problem in found:
        unique.setdefault(problem.code, problem)
    return list(unique.values())


# --- Writing it into the document ---------------------------------------------------------


def _ref(kind: str, name: str) -> Reference:
    return Reference(ref=f"#/components/{kind}/{name}")


def _problem_content(problems: Iterable[ProblemDoc]) -> OpenAPIMediaType:
    # Each type's example is written once, under components, and referred to by its code.
    return OpenAPIMediaType(
        schema=_ref("schemas", "Problem"),
        examples={p.code: _ref("examples", p.code) for p in problems},
    )


def _problem_response(
    status: int, problems: list[ProblemDoc], handler_declared: OpenAPIResponse | Reference | None
) -> OpenAPIResponse:
    listed = "; ".join(f"`{p.code}`: {p.title}" for p in problems)
    description = f"{http.HTTPStatus(status).phrase}, as problem details. {listed}."
    content = {PROBLEM_MEDIA_TYPE: _problem_content(problems)}
    if isinstance(handler_declared, OpenAPIResponse) and handler_declared.content:
        # A body of the handler's own at this status (readiness' 503) stays, beside problems.
        content = {**handler_declared.content, **content}
        description = f"{handler_declared.description} Or, {description[0].lower()}{description[1:]}"
    return OpenAPIResponse(description=description, content=content)


def _with_headers(response: OpenAPIResponse, names: Iterable[str]) -> OpenAPIResponse:
    headers = dict(response.headers or {})
    for name in names:
        headers[name] = _ref("headers", name)
    return dataclasses.replace(response, headers=headers)


def _document(operation: Operation, handler: HTTPRouteHandler, method: str, path: str) -> list[ProblemDoc]:
    """Declare the operation's problems and headers; returns the problems, whose examples
    the components must hold."""
    route = ROUTES.get((method, path), RouteDoc())
    keyed = idempotency_of(handler, method)
    # Before the headers below join the parameters: those are no input to validate.
    problems = problems_of(handler, method, path, operation)

    parameters = list(operation.parameters or [])
    wanted = ["RequestId"]
    if keyed is not None:
        wanted.append("IdempotencyKeyRequired" if keyed == "required" else "IdempotencyKey")
    wanted += [_PARAMETER_OF_HEADER[header] for header in route.reads]
    parameters += [_ref("parameters", name) for name in wanted]
    operation.parameters = parameters

    responses = dict(operation.responses or {})
    own = {str(status) for status in (handler.responses or {})}
    by_status: dict[int, list[ProblemDoc]] = defaultdict(list)
    for problem in problems:
        by_status[problem.status].append(problem)
    for status, group in sorted(by_status.items()):
        key = str(status)
        responses[key] = _problem_response(status, group, responses.get(key) if key in own else None)
    responses["default"] = OpenAPIResponse(
        description="A fault of ours (500 `internal-error`), logged under the answer's X-Request-ID.",
        content={PROBLEM_MEDIA_TYPE: _problem_content([INTERNAL_ERROR])},
    )

    for key, response in responses.items():
        if not isinstance(response, OpenAPIResponse):
            continue
        status = 500 if key == "default" else int(key)
        names = [REQUEST_ID]
        # Every problem answered 503 says when to come back (api.problems.retry_after).
        if status in (429, 503) and by_status.get(status):
            names.append(RETRY_AFTER)
        if keyed is not None and status < 500:
            names.append(IDEMPOTENT_REPLAYED)
        if handler.opt.get(RATE_LIMIT_OPT) is not None:
            names += [RATELIMIT, RATELIMIT_POLICY] if status == 429 else [RATELIMIT_POLICY]
        names += route.headers.get(status, ())
        responses[key] = _with_headers(response, names)
    operation.responses = responses
    return [*problems, INTERNAL_ERROR]


def document_problems(app: Litestar) -> None:
    """Rewrite the app's (cached) OpenAPI document so that each operation declares the
    problem types it can answer, with examples, and the headers it reads and sends."""
    openapi = app.plugins.get(OpenAPIPlugin).provide_openapi()
    components = openapi.components
    components.schemas = {**(components.schemas or {}), "Problem": PROBLEM}
    components.headers = {**(components.headers or {}), **RESPONSE_HEADERS}
    components.parameters = {
        **(components.parameters or {}),
        **{name: parameter for name, (_, parameter) in REQUEST_HEADERS.items()},
    }
    examples = dict(components.examples or {})
    paths = openapi.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or (path_item := paths.get(route.path_format)) is None:
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                operation: Operation | None = getattr(path_item, method.lower(), None)
                if operation is None:
                    continue
                for problem in _document(operation, handler, method, route.path_format):
                    examples[problem.code] = Example(summary=problem.title, value=problem.body)
    components.examples = examples


# --- The docs UI, offline -----------------------------------------------------------------

DOCS_ASSETS_PATH = "/schema/assets"
# Swagger UI as its authors publish it (npm's swagger-ui-dist), unmodified; see its README.
SWAGGER_UI_DIR = Path(__file__).parent / "static" / "swagger-ui"


def docs_ui() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at ``/schema`` (and ``/schema/swagger``), its scripts, styles and icon
    served by this app (``docs_assets``), so the page needs nothing from the internet; the
    document itself at ``/schema/openapi.json`` and ``/schema/openapi.yaml``."""
    assets = f"{DOCS_ASSETS_PATH}/swagger-ui"
    return [
        SwaggerRenderPlugin(
            path=["/", "/swagger"],
            js_url=f"{assets}/swagger-ui-bundle.js",
            css_url=f"{assets}/swagger-ui.css",
            standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
        ),
        YamlRenderPlugin(),
    ]


def docs_assets() -> Router:
    """The files of ``api/static`` under ``/schema/assets``, outside the OpenAPI document."""
    return create_static_files_router(
        path=DOCS_ASSETS_PATH,
        directories=[SWAGGER_UI_DIR.parent],
        name="docs-assets",
        include_in_schema=False,
    )
