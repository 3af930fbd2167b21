"""Checkout, orders and tickets for the signed-in fan."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.admission import require_admission_for_hold
from api.auth import SECURITY, provide_fan
from api.routes.holds import Money, policy_of
from api.schemas import Text, TicketKeySet
from booking.accounts.fans import Principal
from booking.errors import OrderNotFound, TicketLinkInvalid, TicketRevoked
from booking.holds.service import Owner
from booking.keys import SigningKeys
from booking.logs import bind, get_logger
from booking.orders import service as orders
from booking.payments import offline
from booking.payments import service as payments
from booking.payments.registry import Gateways
from booking.tickets import links, render, signing
from booking.tickets import service as tickets

log = get_logger("boxoffice.api.orders")


class CheckoutRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``provider`` is ``offline`` (test cards, see docs/api.md) or ``stripe``. The offline
    provider takes ``card_number``; Stripe is paid in the browser with the returned
    ``client_secret``."""

    provider: Literal["offline", "stripe"]
    card_number: Text | None = None


class CheckoutOut(msgspec.Struct, frozen=True):
    payment_id: uuid.UUID
    hold_id: uuid.UUID
    provider: str
    # confirmed | pending | failed | refund_required
    status: str
    order_id: uuid.UUID | None
    failure_code: str | None
    client_secret: str | None


class OrderLineOut(msgspec.Struct, frozen=True):
    unit_id: int
    seat_id: int | None
    # The label the ticket carries: "Stalls, Row C, Seat 12", or the tier's name for GA.
    seat: str
    # Where the seat is; all three null for a general-admission place.
    section: str | None
    row: str | None
    number: str | None
    tier_id: uuid.UUID
    tier_name: str
    price: Money
    state: str
    ticket_id: uuid.UUID | None


class OrderOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    event_id: uuid.UUID
    hold_id: uuid.UUID
    state: str
    channel: str
    total: Money
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    lines: list[OrderLineOut]


class OrderList(msgspec.Struct, frozen=True):
    items: list[OrderOut]


class TicketOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    order_id: uuid.UUID
    event_id: uuid.UUID
    state: str
    event_title: str
    performer: str
    venue: str
    city: str
    starts_at: dt.datetime
    timezone: str
    seat: str
    issued_at: dt.datetime
    # The signed code a gate checks (offline, with the public key); null once revoked.
    token: str | None


def ticket_out(view: tickets.TicketView) -> TicketOut:
    return TicketOut(
        id=view.ticket_id,
        order_id=view.order_id,
        event_id=view.event_id,
        state=view.state.value,
        event_title=view.event_title,
        performer=view.performer,
        venue=view.venue_name,
        city=view.venue_city,
        starts_at=view.starts_at,
        timezone=view.timezone,
        seat=view.seat,
        issued_at=view.issued_at,
        token=view.token,
    )


def order_out(view: orders.OrderView) -> OrderOut:
    """The one rendering of an order, for fans, the box office and on-call alike."""
    return OrderOut(
        id=view.id,
        event_id=view.event_id,
        hold_id=view.hold_id,
        state=view.state,
        channel=view.channel,
        total=Money(view.total_minor, view.currency),
        created_at=view.created_at,
        cancelled_at=view.cancelled_at,
        lines=[
            OrderLineOut(
                unit_id=line.unit_id,
                seat_id=line.seat_id,
                seat=line.seat,
                section=line.section,
                row=line.row,
                number=line.number,
                tier_id=line.price_tier_id,
                tier_name=line.tier_name,
                price=Money(line.price_minor, line.currency),
                state=line.state,
                ticket_id=line.ticket_id,
            )
            for line in view.lines
        ],
    )


class CheckoutController(Controller):
    tags = ["checkout"]
    security = SECURITY

    @post(
        "/holds/{hold_id:uuid}/checkout",
        status_code=200,
        summary="Pay for a hold",
        description=(
            "Moves the hold to `paying` (its seats are kept for the payment grace period) and "
            "creates the payment. Safe to repeat: a payment in progress is continued, a paid hold "
            "answers with its order. `status` is `confirmed` (the order exists), `failed` (pay "
            "again), `pending` (wait: the result arrives by webhook or reconciliation) or "
            "`refund_required` (paid after the seats went to someone else; refunded automatically). "
            "Idempotent by the hold: no Idempotency-Key is needed, and one sent is not used. "
            "While the payment provider is failing, payments pause: 503 `payment-provider-paused` "
            "at once, with `Retry-After`; nothing is charged and the hold keeps its seats "
            "(its state unchanged, its deadline extended as a checkout would). While the event "
            "sells through a waiting room, send your admission token as the `Admission-Token` "
            "header, as for the hold."
        ),
        # Under overload a paying fan is served before new holds (api.overload).
        opt={"idempotency_key": "natural", "admission": "finish", "rate_limit": "checkout"},
    )
    async def checkout(
        self,
        request: Request[Any, Any, Any],
        fan: NamedDependency[Principal],
        hold_id: FromPath[uuid.UUID],
        data: JSONBody[CheckoutRequest],
    ) -> CheckoutOut:
        gateways: Gateways = request.app.state.gateways
        gateway = gateways.get(data.provider)
        method: dict[str, Any] = {}
        if data.provider == "offline":
            # Checked before anything changes: a bad card number must not move the hold.
            method["card_number"] = offline.card_number({"card_number": data.card_number or ""})
        bind(hold_id=hold_id)
        # An event selling through a waiting room needs the fan's admission (api.admission).
        await require_admission_for_hold(request, fan.fan_id, hold_id)
        log.info("checkout started", provider=data.provider)
        settled = await payments.checkout(
            request.app.state.sessionmaker,
            gateway=gateway,
            owner=Owner(fan_id=fan.fan_id),
            hold_id=hold_id,
            method=method,
            policy=policy_of(request),
            # The process's own verdict on the provider: while it is paused, answered 503
            # at once with the hold kept (booking.payments.breaker).
            breaker=gateways.breaker(data.provider),
        )
        log_settlement(settled)
        return CheckoutOut(
            payment_id=settled.payment_id,
            hold_id=settled.hold_id,
            provider=settled.provider.value,
            status=settled.result.value,
            order_id=settled.order_id,
            failure_code=settled.failure_code,
            client_secret=settled.client_secret,
        )


def log_settlement(settled: payments.Settlement) -> None:
    """One line for how a checkout ended: order confirmed, payment failed, still pending,
    or paid too late (refunded)."""
    if settled.order_id is not None:
        bind(order_id=settled.order_id)
    if settled.result is payments.Result.CONFIRMED:
        log.info("order confirmed", payment_id=settled.payment_id)
    elif settled.result is payments.Result.FAILED:
        log.info("payment failed", payment_id=settled.payment_id, failure_code=settled.failure_code)
    elif settled.result is payments.Result.REFUND_REQUIRED:
        log.warning("paid after the hold's seats were gone: refunding", payment_id=settled.payment_id)
    else:
        log.info("payment pending", payment_id=settled.payment_id)


class OrderController(Controller):
    path = "/orders"
    tags = ["orders"]
    security = SECURITY

    @get("/", summary="Your orders, newest first")
    async def list_orders(
        self, db_session: NamedDependency[AsyncSession], fan: NamedDependency[Principal]
    ) -> OrderList:
        return OrderList(
            items=[order_out(v) for v in await orders.list_orders(db_session, fan_id=fan.fan_id)]
        )

    @get("/{order_id:uuid}", summary="One of your orders, with its tickets")
    async def show(
        self,
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        order_id: FromPath[uuid.UUID],
    ) -> OrderOut:
        bind(order_id=order_id)
        return order_out(await orders.get_order(db_session, order_id, fan_id=fan.fan_id))

    @get(
        "/{order_id:uuid}/tickets.pdf",
        summary="The order's tickets as one PDF",
        description=(
            "A page per valid ticket, each with its QR code. Signed in as the order's fan, or "
            "with the `key` of the link in the confirmation email (no sign-in: the link is the "
            "credential). A cancelled order's tickets are not drawn (409 `ticket-revoked`)."
        ),
        media_type="application/pdf",
        security=[{}, *SECURITY],
    )
    async def tickets_pdf(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        order_id: FromPath[uuid.UUID],
        key: Annotated[
            str | None, QueryParameter(min_length=1, max_length=64, description="The key of the emailed link")
        ] = None,
    ) -> Response[bytes]:
        keys = request.app.state.signing_keys
        fan_id = None
        if key is not None:
            if not links.order_link_key_matches(keys.token_secret, order_id, key):
                raise TicketLinkInvalid()
        else:
            fan_id = (await provide_fan(request)).fan_id
        views = await tickets.order_tickets(db_session, order_id, signing_key=keys.ticket_key, fan_id=fan_id)
        if not views:
            raise OrderNotFound()
        # Drawing is pure Python (about 10 ms a page): off the event loop, so other
        # requests of this process are not stalled behind a long order.
        pdf = await asyncio.to_thread(render.render_tickets_pdf, views)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="tickets-{order_id}.pdf"'},
        )

    @post(
        "/{order_id:uuid}/cancel",
        status_code=200,
        summary="Cancel an order",
        description=(
            "Until `BOXOFFICE_CANCEL_CUTOFF_HOURS` (default 24) before the event: the seats go back "
            "on sale, the tickets are revoked and the payment is refunded. Repeating changes nothing."
        ),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        order_id: FromPath[uuid.UUID],
    ) -> OrderOut:
        cutoff = dt.timedelta(hours=request.app.state.settings.cancel_cutoff_hours)
        bind(order_id=order_id)
        view = await payments.cancel_and_refund(
            db_session, order_id=order_id, fan_id=fan.fan_id, cutoff=cutoff
        )
        log.info("order cancelled", state=view.state)
        return order_out(view)


class TicketController(Controller):
    path = "/tickets"
    tags = ["tickets"]
    security = SECURITY

    async def _view(
        self, request: Request[Any, Any, Any], session: AsyncSession, fan: Principal, ticket_id: uuid.UUID
    ) -> tickets.TicketView:
        key = request.app.state.signing_keys.ticket_key
        return await tickets.ticket_view(session, ticket_id, fan.fan_id, signing_key=key)

    @get("/{ticket_id:uuid}", summary="One of your tickets, with its signed code")
    async def show(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        ticket_id: FromPath[uuid.UUID],
    ) -> TicketOut:
        return ticket_out(await self._view(request, db_session, fan, ticket_id))

    @get("/{ticket_id:uuid}/qr.svg", summary="The ticket's QR code", media_type="image/svg+xml")
    async def qr(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        ticket_id: FromPath[uuid.UUID],
    ) -> Response[str]:
        view = await self._view(request, db_session, fan, ticket_id)
        if view.token is None:
            raise TicketRevoked()
        return Response(render.render_qr_svg(view.token), media_type="image/svg+xml")

    @get("/{ticket_id:uuid}/ticket.pdf", summary="The ticket as a PDF", media_type="application/pdf")
    async def pdf(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        ticket_id: FromPath[uuid.UUID],
    ) -> Response[bytes]:
        view = await self._view(request, db_session, fan, ticket_id)
        return Response(
            render.render_ticket_pdf(view),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="ticket-{view.ticket_id}.pdf"'},
        )


KEY_ID_HEADER = "Boxoffice-Key-Id"
# Gates refresh the key set at least this often; a rotation reaches them within it.
KEY_SET_MAX_AGE_SECONDS = 300


@get(
    "/ticket-key",
    tags=["tickets"],
    summary="The current key that signs ticket codes",
    description=(
        "PEM (Ed25519) of the current signing key only, its key id in the `Boxoffice-Key-Id` "
        "header. During a key rotation codes of earlier keys are valid too: gates should keep "
        "the whole key set, `GET /ticket-keys`."
    ),
    media_type="application/x-pem-file",
    response_headers=[
        ResponseHeader(
            name=KEY_ID_HEADER, description="The key's id, as ticket codes name it", documentation_only=True
        )
    ],
)
async def ticket_public_key(request: Request[Any, Any, Any]) -> Response[str]:
    keys: SigningKeys = request.app.state.signing_keys
    return Response(
        keys.ticket_public_pem(),
        media_type="application/x-pem-file",
        headers={KEY_ID_HEADER: signing.key_id(keys.ticket_public_key)},
    )


@get(
    ["/ticket-keys", "/.well-known/jwks.json"],
    tags=["tickets"],
    summary="Every key that verifies ticket codes, as a JSON Web Key Set",
    description=(
        "The current signing key first, then each earlier key still trusted (a key rotation "
        "keeps them until the tickets they signed are used). Each is an Ed25519 JWK "
        "(`kty` OKP, `x` the raw public key in base64url) with the `kid` that codes name, and "
        "`not_before`/`not_after`: when it is trusted (ISO 8601, null for open-ended). A code "
        "verifies when its key is in the set and trusted now; docs/tickets.md shows how. "
        f"May be cached for {KEY_SET_MAX_AGE_SECONDS} s."
    ),
    cache_control=CacheControlHeader(max_age=KEY_SET_MAX_AGE_SECONDS, public=True),
)
async def ticket_key_set(request: Request[Any, Any, Any]) -> TicketKeySet:
    keys: SigningKeys = request.app.state.signing_keys
    return msgspec.convert({"keys": [signing.jwk(key) for key in keys.published_keys()]}, TicketKeySet)
