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


class RoomNotConfigured(BookingError):
    code = "waiting-room-not-configured"
    title = "This event has no waiting room"
    status = 404

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Set one up first: PUT /staff/events/{event_id}/waiting-room.")


class RoomStateConflict(BookingError):
    code = "waiting-room-state-conflict"
    title = "The waiting room cannot do that in its current state"
    status = 409


class WaitingRoomNotActive(BookingError):
    # Nothing to wait for: holds on this event need no admission token.
    code = "waiting-room-not-active"
    title = "This event has no waiting room open"
    status = 409

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Tickets for this event need no place in a queue: hold them directly.")


class WaitingRoomNotOpen(BookingError):
    code = "waiting-room-not-open"
    title = "The waiting room is not open yet"
    status = 409

    def __init__(self, opens_at: str = "2026-12-01T09:00:00+00:00") -> None:
        super().__init__(f"Fans may join from {opens_at}.", opens_at=opens_at)


class NotInQueue(BookingError):
    # Never joined, left, or stopped checking the place for longer than the room's grace.
    code = "queue-place-not-found"
    title = "You have no place in this event's queue"
    status = 404

    def __init__(self, grace_seconds: int = 120) -> None:
        super().__init__(
            "Join with POST /events/{event_id}/queue. A place is kept while you check it at least"
            f" every {grace_seconds} seconds.",
            grace_seconds=grace_seconds,
        )


class WaitingRoomUnavailable(BookingError):
    # Redis, which keeps the queue, cannot be reached: the room fails closed.
    code = "waiting-room-unavailable"
    title = "The waiting room is unavailable for a moment"
    status = 503

    def __init__(self) -> None:
        super().__init__(
            "This event sells through a waiting room, which cannot be reached right now. Nothing was"
            " changed and your place is kept; try again shortly.",
            retry_after=5,
        )


class AdmissionRefused(BookingError):
    """A hold or checkout on an event whose waiting room is active, without a valid
    admission token; the subclasses say why. Nothing was changed."""

    code = "admission-refused"
    title = "An admission from the waiting room is needed"
    status = 403


class AdmissionRequired(AdmissionRefused):
    code = "admission-required"
    title = "This event sells through a waiting room: an admission token is needed"
    status = 403

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail
            or "Join the queue (POST /events/{event_id}/queue); once admitted, send the token in the"
            " Admission-Token header."
        )


class AdmissionTokenInvalid(AdmissionRefused):
    # Malformed, cut short, forged, signed by a key not trusted here, or a ticket code.
    code = "admission-token-invalid"
    title = "The admission token is not valid"
    status = 403

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail or "Send the admission token exactly as GET /events/{event_id}/queue/me gave it."
        )


class AdmissionTokenExpired(AdmissionRefused):
    code = "admission-token-expired"
    title = "Your shopping window has ended"
    status = 403

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "An admission is given once per event; its window cannot be reopened.")


class AdmissionTokenOtherFan(AdmissionRefused):
    code = "admission-token-other-fan"
    title = "The admission token belongs to another fan"
    status = 403


class AdmissionTokenOtherEvent(AdmissionRefused):
    code = "admission-token-other-event"
    title = "The admission token is for another event"
    status = 403


class AdmissionRevoked(AdmissionRefused):
    # The fan left the room (ending the window early), or was removed from it.
    code = "admission-revoked"
    title = "This admission has been given up"
    status = 403

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "The shopping window was ended early; it cannot be reopened.")


class RateLimited(BookingError):
    # Too many requests of one kind from one fan, address or account in a window. Nothing
    # was done; retrying after ``retry_after`` seconds is safe.
    code = "rate-limited"
    title = "Too many requests; slow down"
    status = 429

    def __init__(self, policy: str, retry_after: int) -> None:
        super().__init__(
            f"Too many of these requests (limit {policy}). Try again in {retry_after} seconds.",
            retry_after=retry_after,
            policy=policy,
        )
        self.policy = policy


class LoginBackoff(BookingError):
    # The same answer whether or not an account has this email: only the failures count.
    code = "login-backoff"
    title = "Too many failed sign-ins; wait before trying again"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Sign-in is paused after repeated failures. Try again in {retry_after} seconds.",
            retry_after=retry_after,
        )


class PaymentProviderPaused(BookingError):
    # The payment provider failed repeatedly, so checkout stops calling it for a cool-down
    # (booking.payments.breaker) instead of making every fan wait for its timeout. The hold
    # keeps its seats meanwhile: paying again after ``retry_after`` seconds is safe.
    code = "payment-provider-paused"
    title = "Payments are paused while the payment provider recovers"
    status = 503

    def __init__(self, retry_after: int, held_until: str, *, in_progress: bool = False) -> None:
        if in_progress:
            detail = (
                f"Your payment in progress is settled as soon as the provider answers; ask again in "
                f"{retry_after} seconds. Your seats are kept until {held_until}."
            )
        else:
            detail = (
                f"Nothing was charged. Pay again in {retry_after} seconds; your seats are kept "
                f"until {held_until}."
            )
        super().__init__(detail, retry_after=retry_after, held_until=held_until)


class SeatmapStreamUnavailable(BookingError):
    # Live changes travel through Redis; the seat map itself is still served (from
    # PostgreSQL while Redis is away), so the client polls it meanwhile.
    code = "seatmap-stream-unavailable"
    title = "Live seat-map updates are unavailable right now"
    status = 503

    def __init__(self) -> None:
        super().__init__(
            "Read the seat map (GET /events/{event_id}/seatmap) meanwhile and reconnect later.",
            retry_after=5,
        )


class VenueNotFound(BookingError):
    code = "venue-not-found"
    title = "No such venue"
    status = 404


class LayoutNotFound(BookingError):
    code = "layout-not-found"
    title = "No such seating layout at this venue"
    status = 404


class EventSlugTaken(BookingError):
    code = "event-slug-taken"
    title = "Another event already has this slug"
    status = 409


class TiersInvalid(BookingError):
    # Price tiers that do not price every seat and standing place of the layout exactly
    # once. ``problems`` lists each one found, in words an organiser can act on.
    code = "tiers-invalid"
    title = "The price tiers do not cover the layout exactly once"
    status = 400

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"{shown}. Nothing was changed.", problems=problems)
        self.problems = problems


class TiersLocked(BookingError):
    # Holds and orders name their tier: once anything was held, the tiers stay as they are.
    code = "tiers-locked"
    title = "The tiers of an event cannot be replaced once tickets have been held"
    status = 409

    def __init__(self) -> None:
        super().__init__("Tickets of this event have been held already; change the tiers' prices instead.")


class PriceTierNotFound(BookingError):
    code = "price-tier-not-found"
    title = "No such price tier at this event"
    status = 404


class EventStateConflict(BookingError):
    code = "event-state-conflict"
    title = "The event cannot do that in its current state"
    status = 409

    def __init__(self, action: str, status: str, phase: str) -> None:
        shown = status if status == phase else f"{status}, {phase.replace('_', ' ')} now"
        # ``event_status``: the problem's own ``status`` is its HTTP status.
        super().__init__(f"Cannot {action} an event that is {shown}.", event_status=status, phase=phase)


class EventNotReady(BookingError):
    # What stops an event from going on sale, each named: fix them and try again.
    code = "event-not-ready"
    title = "The event cannot go on sale yet"
    status = 409

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) + ".", problems=problems)
        self.problems = problems


class LayoutInvalid(BookingError):
    code = "layout-invalid"
    title = "The layout file is not valid"
    status = 422

    def __init__(self, source: str, problems: list[tuple[int | None, str]]) -> None:
        """``problems``: (line or None, what is wrong) pairs, in the order to show them."""
        lines = [f"{source}:{line}: {text}" if line else f"{source}: {text}" for line, text in problems]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        super().__init__(
            (lines[0] if lines else source) + more,
            problems=[{"file": source, "line": line, "message": text} for line, text in problems],
        )
        self.source = source
        self.problems = problems
        self.lines = lines


class LayoutChangeRefused(BookingError):
    code = "layout-change-refused"
    title = "The layout change would remove places that are sold, held or have a history"
    status = 409

    def __init__(self, places: list[str]) -> None:
        """``places``: each place the change would remove and why it must stay."""
        shown = "; ".join(places[:20]) + (f"; and {len(places) - 20} more" if len(places) > 20 else "")
        super().__init__(f"Nothing was changed. Keep these in the file: {shown}.", places=places)
        self.places = places
