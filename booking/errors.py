"""Domain errors, and the one place their user-facing wording lives.

Each error has a stable ``code`` (the problem ``type`` the API answers with) and a
``status`` hint for HTTP. Entry points translate; they never invent their own wording.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BookingError(Exception):
    code: ClassVar[str] = "booking-error"
    title: ClassVar[str] = "The request could not be completed"
    status: ClassVar[int] = 400

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class InvalidCursor(BookingError):
    code = "invalid-cursor"
    title = "The pagination cursor is not valid"
    status = 400

    def __init__(self, cursor: str) -> None:
        super().__init__("Use the next_cursor value from a previous page, unchanged.")
        self.cursor = cursor


class EventNotFound(BookingError):
    code = "event-not-found"
    title = "No such event"
    status = 404


class SaleNotOpen(BookingError):
    code = "sale-not-open"
    title = "Tickets for this event are not on sale right now"
    status = 409


class TierNotFound(BookingError):
    code = "tier-not-found"
    title = "No such general-admission tier for this event"
    status = 404


class InvalidRequest(BookingError):
    code = "invalid-request"
    title = "The request is not valid"
    status = 400


class UnknownSeats(BookingError):
    code = "unknown-seats"
    title = "Some seats do not exist at this event"
    status = 400

    def __init__(self, seat_ids: list[int]) -> None:
        super().__init__(f"Not seats of this event: {', '.join(map(str, seat_ids))}.", seat_ids=seat_ids)
        self.seat_ids = seat_ids


class SeatsTaken(BookingError):
    code = "seats-taken"
    title = "Some of the seats are no longer available"
    status = 409

    def __init__(self, seat_ids: list[int]) -> None:
        super().__init__(
            f"Already taken: {', '.join(map(str, seat_ids))}. Nothing was held; pick other seats.",
            seat_ids=seat_ids,
        )
        self.seat_ids = seat_ids


class SoldOut(BookingError):
    code = "sold-out"
    title = "This tier is sold out"
    status = 409


class NotEnoughLeft(BookingError):
    code = "not-enough-left"
    title = "Fewer tickets are left in this tier than asked for"
    status = 409

    def __init__(self, remaining: int) -> None:
        super().__init__(f"Only {remaining} left; nothing was held.", remaining=remaining)
        self.remaining = remaining


class TicketCapReached(BookingError):
    code = "ticket-cap-reached"
    title = "That would exceed the ticket limit for this event"
    status = 409

    def __init__(self, cap: int, already: int) -> None:
        super().__init__(
            f"The limit is {cap} tickets per person for this event; you already have {already}.",
            cap=cap,
            already=already,
        )


class HoldNotFound(BookingError):
    code = "hold-not-found"
    title = "No such hold"
    status = 404


class HoldExpired(BookingError):
    code = "hold-expired"
    title = "The hold has expired"
    status = 409


class HoldStateConflict(BookingError):
    code = "hold-state-conflict"
    title = "The hold cannot do that in its current state"
    status = 409

    def __init__(self, state: str, action: str) -> None:
        super().__init__(f"Cannot {action} a hold that is {state}.", state=state)
        self.state = state


class RenewalLimit(BookingError):
    code = "renewal-limit"
    title = "The hold cannot be renewed again"
    status = 409


class OrderNotFound(BookingError):
    code = "order-not-found"
    title = "No such order"
    status = 404


class InventoryBusy(BookingError):
    code = "inventory-busy"
    title = "These tickets are being bought by others right now"
    status = 503

    def __init__(self) -> None:
        super().__init__("Try again in a moment.", retry_after=1)


class IdempotencyKeyReused(BookingError):
    code = "idempotency-key-reused"
    title = "This Idempotency-Key was used with a different request"
    status = 422


class IdempotencyKeyInProgress(BookingError):
    code = "idempotency-key-in-progress"
    title = "A request with this Idempotency-Key is still being processed"
    status = 409


class EmailTaken(BookingError):
    code = "email-taken"
    title = "An account with this email already exists"
    status = 409


class InvalidCredentials(BookingError):
    # One answer for unknown email and wrong password: the API never confirms an account.
    code = "invalid-credentials"
    title = "Email or password is wrong"
    status = 401


class NotAuthenticated(BookingError):
    code = "not-authenticated"
    title = "Sign in first"
    status = 401


class TicketNotFound(BookingError):
    # Also the answer for another fan's ticket: its id must look exactly like a missing one.
    code = "ticket-not-found"
    title = "No such ticket"
    status = 404


class TicketRevoked(BookingError):
    code = "ticket-revoked"
    title = "This ticket has been revoked"
    status = 409


class TicketLinkInvalid(BookingError):
    # The key of an emailed ticket link does not belong to this order: mistyped, cut short
    # by a mail client, or made up. Distinct from "not found" so the fan knows to use the
    # link as sent, or to sign in.
    code = "ticket-link-invalid"
    title = "This ticket link is not valid"
    status = 403


class TicketTokenInvalid(BookingError):
    """A ticket code that does not prove a ticket; the subclasses say why."""

    code = "ticket-token-invalid"
    title = "The ticket code is not valid"
    status = 422


class TicketTokenMalformed(TicketTokenInvalid):
    code = "ticket-token-malformed"
    title = "The ticket code cannot be read"
    status = 400


class TicketSignatureInvalid(TicketTokenInvalid):
    code = "ticket-signature-invalid"
    title = "The ticket code is forged or has been altered"
    status = 422


class TicketKeyUnknown(TicketTokenInvalid):
    # Either a key rotated out of service or a key that never was ours: the gate cannot tell.
    code = "ticket-key-unknown"
    title = "The ticket code was signed with a key that is not trusted here"
    status = 422


class WebhookInvalid(BookingError):
    """A provider webhook that cannot be trusted or read; the subclasses say why. Nothing
    was changed, and the provider should not retry the same delivery."""

    code = "webhook-invalid"
    title = "The webhook cannot be accepted"
    status = 400


class WebhookSignatureInvalid(WebhookInvalid):
    # Also a missing or unreadable signature header: a forger learns nothing from the answer.
    code = "webhook-signature-invalid"
    title = "The webhook signature does not match its body"
    status = 400


class WebhookTimestampStale(WebhookInvalid):
    # A correct signature on an old timestamp: a replay of a captured delivery.
    code = "webhook-timestamp-stale"
    title = "The webhook was signed too long ago"
    status = 400


class WebhookPayloadMalformed(WebhookInvalid):
    code = "webhook-payload-malformed"
    title = "The webhook body is not an event"
    status = 400


class CancellationClosed(BookingError):
    code = "cancellation-closed"
    title = "This order can no longer be cancelled"
    status = 409


class RefundNotFound(BookingError):
    code = "refund-not-found"
    title = "No such refund"
    status = 404


class RefundNotFailed(BookingError):
    code = "refund-not-failed"
    title = "Only a failed refund can be retried"
    status = 409


class PaymentNotRecordedYet(BookingError):
    # A webhook about one of our payments (its metadata names it) that is not committed
    # here yet: not acknowledged, so the provider delivers it again.
    code = "payment-not-recorded-yet"
    title = "This payment is not recorded here yet"
    status = 503

    def __init__(self) -> None:
        super().__init__("Deliver the event again later.", retry_after=30)


class PaymentProviderUnavailable(BookingError):
    code = "payment-provider-unavailable"
    title = "That payment provider is not offered here"
    status = 400


class Forbidden(BookingError):
    # A staff key whose role may not take this action. Roles are checked on the server for
    # every staff route; the console hiding a button is a convenience, not the guard.
    code = "forbidden"
    title = "Your role may not do this"
    status = 403


class StaffKeyNotFound(BookingError):
    code = "staff-key-not-found"
    title = "No live staff key with that name"
    status = 404


class HoldAlreadyEnded(BookingError):
    code = "hold-already-ended"
    title = "The hold has already ended"
    status = 409


class HoldBeingPaid(BookingError):
    # Releasing it could take the seats from under a payment that then succeeds.
    code = "hold-being-paid"
    title = "The hold is being paid for"
    status = 409


class SaleStateConflict(BookingError):
    code = "sale-state-conflict"
    title = "The sale cannot do that in its current state"
    status = 409


class NothingToReconcile(BookingError):
    code = "nothing-to-reconcile"
    title = "There is no payment waiting to be settled"
    status = 409


class OrderNotRefundable(BookingError):
    code = "order-not-refundable"
    title = "The order cannot be refunded in its current state"
    status = 409


class PaymentProviderUnreachable(BookingError):
    code = "payment-provider-unreachable"
    title = "The payment provider did not answer"
    status = 503

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after=30)


class JobNotFound(BookingError):
    code = "job-not-found"
    title = "No such job"
    status = 404


class JobNotFailed(BookingError):
    # Requeue and delete act on failed jobs only; a queued or running job is left alone.
    code = "job-not-failed"
    title = "The job has not failed"
    status = 409


class UnknownQueue(BookingError):
    code = "unknown-queue"
    title = "No such job queue"
    status = 400


class CashShort(BookingError):
    code = "cash-short"
    title = "The cash tendered does not cover the total"
    status = 409

    def __init__(self, *, total: str, tendered: str, short: str, **amounts: Any) -> None:
        super().__init__(
            f"{tendered} tendered for a total of {total}: {short} short. Nothing was recorded.", **amounts
        )


class SaleSeatsGone(BookingError):
    # At a till the money is taken only once this call succeeds, so nothing needs refunding.
    code = "sale-seats-gone"
    title = "The sale's hold ran out and its seats went to someone else"
    status = 409

    def __init__(self) -> None:
        super().__init__(
            "Nothing was sold and no payment was recorded: take no money (void a card-terminal"
            " payment if one was made) and start a new sale."
        )
