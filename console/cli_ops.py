"""On-call commands: `boxoffice holds`, `boxoffice orders`, `boxoffice refunds`, `boxoffice sale`.

Each calls the same ``booking.ops.service`` verb as the staff API, renders a table for people
or JSON for scripts (``--json``), asks before destructive acts (``--yes`` for scripts), and
writes an audit row for every change it makes or is refused (actor: the person at this
terminal). Exit codes are those of ``console/cli_common.py``: 3 when there is nothing to do.

The booking services are imported inside each command, so that loading this module (for
``--help``, or for another command) costs nothing but Typer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from console.cli_common import (
    FAILED,
    ID,
    PROSE,
    USAGE,
    Column,
    JsonOption,
    YesOption,
    audited,
    confirm,
    enum_parser,
    fail,
    nothing,
    record,
    report,
    settings_of,
    show,
    when,
    with_session,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from booking.holds.service import HoldView
    from booking.ops import reads
    from booking.ops import service as ops
    from booking.payments import service as payments
    from booking.payments.models import RefundState
    from booking.payments.registry import Gateways
    from booking.settings import Settings

holds_app = typer.Typer(help="Find and release holds.", no_args_is_help=True)
orders_app = typer.Typer(help="Stuck payments and refunds.", no_args_is_help=True)
sale_app = typer.Typer(help="Pause and resume an event's sale.", no_args_is_help=True)
refunds_app = typer.Typer(help="Refunds not paid back yet, and retrying failed ones.", no_args_is_help=True)

T = TypeVar("T")


def _list_cap(limit: int) -> int:
    """The service's own cap on a listing, checked as the option is read: over it is bad usage."""
    from booking.ops.reads import MAX_LIST

    if limit > MAX_LIST:
        raise typer.BadParameter(f"{limit} is more than {MAX_LIST}, the most a listing shows")
    return limit


def _refund_states() -> type[RefundState]:
    from booking.payments.models import RefundState

    return RefundState


EventOption = Annotated[str | None, typer.Option("--event", "-e", help="Event id or slug.")]
LimitOption = Annotated[int, typer.Option(min=1, callback=_list_cap, help="At most this many.")]


def _with_gateways(
    settings: Settings,
    work: Callable[[async_sessionmaker[AsyncSession], Gateways], Awaitable[T]],
    subject: str = "",
) -> T:
    """``work`` with a session factory and the configured payment providers, built as the
    payment jobs build them. The provider is called between transactions, so ``work`` opens
    its own sessions; the one ``with_session`` hands out only lends its engine."""
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

    from booking.payments.registry import Gateways

    async def run(session: AsyncSession) -> T:
        engine = session.bind
        assert isinstance(engine, AsyncEngine)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        gateways = Gateways(settings, sessions)
        try:
            return await work(sessions, gateways)
        finally:
            await gateways.aclose()

    return with_session(settings, run, subject)


# --- holds -------------------------------------------------------------------------------


def _hold_display(row: reads.HoldRow) -> dict[str, Any]:
    from booking.money import money

    if row.seconds_left is None:
        left = ""
    elif row.overdue:
        left = "overdue"
    else:
        left = f"{row.seconds_left} s"
    return {
        "hold": str(row.hold_id),
        "event": row.event_title,
        "owner": row.owner if row.owner_kind == "fan" else f"{row.owner} (staff)",
        "state": row.state.value,
        "tickets": row.quantity,
        "total": money(row.total_minor, row.currency),
        "expires": when(row.expires_at),
        "left": left,
    }


@holds_app.command("list")
def holds_list(
    ctx: typer.Context,
    event: EventOption = None,
    expired: Annotated[
        bool, typer.Option("--expired", help="Only holds live but past their deadline.")
    ] = False,
    fan: Annotated[str | None, typer.Option("--fan", help="The fan's email, any case.")] = None,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
) -> None:
    """Holds, newest first. Exit 3 when none match."""
    from booking.ops import reads

    async def work(session: AsyncSession) -> list[reads.HoldRow]:
        event_id = await reads.resolve_event(session, event) if event is not None else None
        return await reads.find_holds(
            session, event_id=event_id, fan_email=fan, expired_only=expired, limit=limit
        )

    show(
        with_session(settings_of(ctx), work),
        [
            Column("hold", "Hold", ID),
            Column("event", "Event", PROSE),
            Column("owner", "Owner"),
            Column("state", "State"),
            Column("tickets", "Tickets"),
            Column("total", "Total"),
            Column("expires", "Expires"),
            Column("left", "Left"),
        ],
        as_json=as_json,
        title="Holds",
        empty="No holds match.",
        display=_hold_display,
        empty_is_nothing=True,
    )


@holds_app.command("release")
def holds_release(
    ctx: typer.Context,
    hold_id: Annotated[
        uuid.UUID | None, typer.Argument(metavar="HOLD_ID", help="The hold to release.")
    ] = None,
    event: EventOption = None,
    expired: Annotated[
        bool, typer.Option("--expired", help="Release every hold past its deadline (of --event).")
    ] = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Release one hold (HOLD_ID), or every expired hold (--expired, of --event or of all
    events). Exit 3 when no hold has expired."""
    settings = settings_of(ctx)
    if hold_id is not None and (event is not None or expired):
        fail("give a HOLD_ID, or --expired (with --event), not both", code=USAGE)
    if hold_id is None and not expired:
        fail("give a HOLD_ID to release, or --expired to release expired holds", code=USAGE)
    if hold_id is not None:
        _release_one(settings, hold_id, yes=yes, as_json=as_json)
    else:
        _release_expired(settings, event, yes=yes, as_json=as_json)


def _release_one(settings: Settings, hold_id: uuid.UUID, *, yes: bool, as_json: bool) -> None:
    from booking.ops import service as ops

    confirm(f"Release hold {hold_id}? Its tickets go back on sale at once", yes)

    async def work(session: AsyncSession) -> HoldView:
        return await audited(
            session,
            lambda: ops.release_hold_by_staff(session, hold_id),
            action="hold.release",
            target_type="hold",
            target_id=str(hold_id),
            details=lambda view: {"event_id": str(view.event_id), "quantity": view.quantity},
        )

    view = with_session(settings, work, f"hold {hold_id}")
    report(as_json, view, f"released hold {hold_id}: {view.quantity} ticket(s) back on sale")


def _release_expired(settings: Settings, event: str | None, *, yes: bool, as_json: bool) -> None:
    from booking.ops import reads
    from booking.ops import service as ops

    async def expired_now(session: AsyncSession) -> tuple[uuid.UUID | None, int]:
        event_id = await reads.resolve_event(session, event) if event is not None else None
        found = await reads.find_holds(session, event_id=event_id, expired_only=True, limit=reads.MAX_LIST)
        return event_id, len(found)

    event_id, expired = with_session(settings, expired_now, f"event {event}" if event else "")
    where = f"of event {event}" if event else "across all events"
    if expired == 0:
        nothing(f"No expired holds {where}; nothing to do.", as_json, {"event_id": event_id, "released": 0})
    confirm(f"Release {expired} expired hold(s) {where}", yes)

    async def work(session: AsyncSession) -> int:
        return await audited(
            session,
            lambda: ops.release_expired(session, event_id),
            action="hold.release_expired",
            target_type="event",
            target_id=str(event_id) if event_id else "",
            details=lambda released: {"released": released},
        )

    released = with_session(settings, work)
    payload = {"event_id": event_id, "released": released}
    if released == 0:
        # Tidied meanwhile by the sweeper.
        nothing(f"No expired holds {where} were left to release.", as_json, payload)
    report(as_json, payload, f"released {released} expired hold(s) {where}")


# --- orders ------------------------------------------------------------------------------


def _stuck_display(row: reads.StuckOrder) -> dict[str, Any]:
    from booking.money import money

    return {
        "hold": str(row.hold_id),
        "event": row.event_title,
        "buyer": row.buyer,
        "amount": money(row.amount_minor, row.currency),
        "provider": row.provider or "",
        "payment": row.payment_state or "none",
        "age": f"{row.age_seconds // 60} min" if row.age_seconds >= 60 else f"{row.age_seconds} s",
        "overdue": "yes" if row.overdue else "",
    }


@orders_app.command("stuck")
def orders_stuck(
    ctx: typer.Context,
    older_than: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=7 * 86400,
            show_default=False,
            help=(
                "Seconds a payment must have been pending [default: as long as the reconciliation job waits]."
            ),
        ),
    ] = None,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
) -> None:
    """Payments that have not settled: holds in paying past their deadline, and payments
    pending for a while. Exit 3 when there are none."""
    from booking.ops import reads

    after = reads.STUCK_AFTER if older_than is None else dt.timedelta(seconds=older_than)

    async def work(session: AsyncSession) -> list[reads.StuckOrder]:
        return await reads.stuck_orders(session, older_than=after, limit=limit)

    show(
        with_session(settings_of(ctx), work),
        [
            Column("hold", "Hold", ID),
            Column("event", "Event", PROSE),
            Column("buyer", "Buyer"),
            Column("amount", "Amount"),
            Column("provider", "Provider"),
            Column("payment", "Payment"),
            Column("age", "Age"),
            Column("overdue", "Overdue"),
        ],
        as_json=as_json,
        title="Stuck orders",
        empty="No stuck orders.",
        display=_stuck_display,
        empty_is_nothing=True,
    )


async def _record_settlement(
    sessions: async_sessionmaker[AsyncSession], hold_id: uuid.UUID, reconciled: ops.Reconciled
) -> None:
    from booking.ops.models import Outcome

    # The settlement committed in its own transaction (the provider is asked between
    # transactions), so its audit row follows it in another.
    settled = reconciled.settlement
    async with sessions() as session:
        await record(
            session,
            action="order.reconcile",
            outcome=Outcome.OK if settled is not None else Outcome.FAILED,
            target_type="hold",
            target_id=str(hold_id),
            details=(
                {
                    "payment_id": str(settled.payment_id),
                    "result": settled.result.value,
                    "order_id": str(settled.order_id) if settled.order_id else None,
                }
                if settled is not None
                else {"detail": reconciled.error}
            ),
        )


def _settlement_line(reconciled: ops.Reconciled) -> str:
    settled = reconciled.settlement
    if settled is None:
        return f"hold {reconciled.hold_id}: not settled ({reconciled.error})"
    order = f", order {settled.order_id}" if settled.order_id else ""
    return f"hold {reconciled.hold_id}: {settled.result.value}{order}"


@orders_app.command("reconcile")
def orders_reconcile(
    ctx: typer.Context,
    hold_id: Annotated[
        uuid.UUID | None,
        typer.Argument(metavar="HOLD_ID", help="The stuck order's hold id (as `orders stuck` lists it)."),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every stuck order with a pending payment.")] = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ask the payment provider about a stuck order (or --all of them) and settle what it
    says. Exit 3 when nothing is stuck."""
    settings = settings_of(ctx)
    if (hold_id is None) == (not every):
        fail("give the HOLD_ID of one stuck order, or --all", code=USAGE)
    if hold_id is not None:
        _reconcile_one(settings, hold_id, as_json=as_json)
    else:
        _reconcile_all(settings, yes=yes, as_json=as_json)


def _reconcile_one(settings: Settings, hold_id: uuid.UUID, *, as_json: bool) -> None:
    from booking.errors import BookingError
    from booking.ops import service as ops

    async def work(sessions: async_sessionmaker[AsyncSession], gateways: Gateways) -> ops.Reconciled:
        try:
            settled = await ops.reconcile_order(sessions, gateways, hold_id)
        except BookingError as error:
            failure = ops.Reconciled(hold_id, None, f"{error.code}: {error.detail}")
            await _record_settlement(sessions, hold_id, failure)
            raise
        reconciled = ops.Reconciled(hold_id, settled)
        await _record_settlement(sessions, hold_id, reconciled)
        return reconciled

    reconciled = _with_gateways(settings, work, f"hold {hold_id}")
    report(as_json, reconciled.settlement, _settlement_line(reconciled))


def _reconcile_all(settings: Settings, *, yes: bool, as_json: bool) -> None:
    from booking.ops import reads
    from booking.ops import service as ops

    async def pending(session: AsyncSession) -> int:
        return sum(row.payment_id is not None for row in await reads.stuck_orders(session))

    waiting = with_session(settings, pending)
    if waiting == 0:
        nothing("No stuck orders with a pending payment; nothing to do.", as_json, {"items": []})
    confirm(f"Settle {waiting} stuck order(s) with their payment providers", yes)

    async def work(sessions: async_sessionmaker[AsyncSession], gateways: Gateways) -> list[ops.Reconciled]:
        done = await ops.reconcile_stuck(sessions, gateways)
        for reconciled in done:
            await _record_settlement(sessions, reconciled.hold_id, reconciled)
        return done

    done = _with_gateways(settings, work)
    report(as_json, {"items": done}, *(_settlement_line(reconciled) for reconciled in done))
    if not done:
        raise typer.Exit(3)
    if any(r.settlement is None for r in done):
        raise typer.Exit(FAILED)


@orders_app.command("refund")
def orders_refund(
    ctx: typer.Context,
    order_id: Annotated[uuid.UUID, typer.Argument(metavar="ORDER_ID", help="The order to refund.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Refund a confirmed order: seats back on sale, tickets revoked, the payment refunded
    (no cancellation cut-off applies to staff)."""
    from booking.money import money
    from booking.ops import service as ops

    settings = settings_of(ctx)
    confirm(f"Refund order {order_id}? Its tickets stop working at once", yes)

    async def work(session: AsyncSession) -> ops.StaffRefund:
        return await audited(
            session,
            lambda: ops.refund_order_by_staff(session, order_id),
            action="order.refund",
            target_type="order",
            target_id=str(order_id),
            details=lambda done: {
                "amount_minor": done.order.total_minor,
                "currency": done.order.currency,
                "refund_recorded": done.refund_recorded,
            },
        )

    refunded = with_session(settings, work, f"order {order_id}")
    amount = money(refunded.order.total_minor, refunded.order.currency)
    how = (
        "refund recorded with the provider"
        if refunded.refund_recorded
        else "paid at a till: hand it back in person"
    )
    report(as_json, refunded, f"refunded order {order_id}: {amount} ({how})")


# --- refunds -----------------------------------------------------------------------------


def _refund_display(row: payments.RefundView) -> dict[str, Any]:
    from booking.money import money

    return {
        "refund": str(row.id),
        "state": row.state,
        "amount": money(row.amount_minor, row.currency),
        "provider": row.provider,
        "order": str(row.order_id) if row.order_id else f"hold {row.hold_id}",
        "attempts": str(row.attempts),
        "error": row.last_error or "",
        "since": when(row.updated_at),
    }


@refunds_app.command("list")
def refunds_list(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option(
            parser=enum_parser(_refund_states),
            metavar="[pending|submitted|succeeded|failed]",
            help="Only refunds in this state (repeat for several). Default: not paid back yet.",
        ),
    ] = None,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
) -> None:
    """Refunds, newest first: by default those not paid back yet (pending, submitted to the
    provider, failed). A failed one needs someone: see its error, then `refunds retry`. Exit
    3 when there are none."""
    from booking.payments import service as payments
    from booking.payments.models import RefundState

    states = {RefundState(s) for s in state} if state else payments.UNSETTLED_REFUND_STATES

    async def work(session: AsyncSession) -> list[payments.RefundView]:
        return await payments.list_refunds(session, states=states, limit=limit)

    show(
        with_session(settings_of(ctx), work),
        [
            Column("refund", "Refund", ID),
            Column("state", "State"),
            Column("amount", "Amount"),
            Column("provider", "Provider"),
            # An order id, or "hold <id>" for a refund of a payment that never became one.
            Column("order", "Order", ID),
            Column("attempts", "Errors"),
            Column("error", "Last error", PROSE),
            Column("since", "Since"),
        ],
        as_json=as_json,
        title="Refunds",
        empty="No refunds waiting.",
        display=_refund_display,
        empty_is_nothing=True,
    )


@refunds_app.command("retry")
def refunds_retry(
    ctx: typer.Context,
    refund_id: Annotated[uuid.UUID, typer.Argument(metavar="REFUND_ID", help="A failed refund.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pay a failed refund again: the refund job sends it to the provider as a new request
    within a minute. Only failed refunds (exit 1 otherwise)."""
    from booking.errors import RefundNotFailed
    from booking.payments import service as payments
    from booking.payments.models import RefundState

    settings = settings_of(ctx)
    confirm(f"Send refund {refund_id} to the provider again?", yes)

    async def act(session: AsyncSession) -> bool:
        if not await payments.retry_refund(session, refund_id):
            raise RefundNotFailed()
        return True

    async def work(session: AsyncSession) -> bool:
        return await audited(
            session,
            lambda: act(session),
            action="refund.retry",
            target_type="refund",
            target_id=str(refund_id),
            details=lambda _: {},
        )

    with_session(settings, work, f"refund {refund_id}")
    report(
        as_json,
        {"id": str(refund_id), "state": RefundState.PENDING.value},
        f"refund {refund_id}: pending again; the refund job pays it within a minute",
    )


# --- sale --------------------------------------------------------------------------------


def _move_sale(settings: Settings, ref: str, verb: str, as_json: bool) -> None:
    from booking.ops import reads
    from booking.ops import service as ops

    move = ops.pause_sale if verb == "pause" else ops.resume_sale

    async def act(session: AsyncSession) -> ops.SaleChange:
        return await move(session, await reads.resolve_event(session, ref))

    async def work(session: AsyncSession) -> ops.SaleChange:
        return await audited(
            session,
            lambda: act(session),
            action=f"sale.{verb}",
            target_type="event",
            target_id=ref,
            details=lambda change: {
                "target_id": str(change.event_id),
                "previous": change.previous.value,
                "status": change.status.value,
            },
        )

    change = with_session(settings, work, f"event {ref}")
    report(
        as_json,
        change,
        f"{change.title} ({change.event_id}): {change.previous.value} → {change.status.value}",
    )


@sale_app.command("pause")
def sale_pause(
    ctx: typer.Context,
    event: Annotated[str, typer.Argument(metavar="EVENT", help="Event id or slug.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Stop selling an event at once; holds already made may still be paid."""
    confirm(f"Pause the sale of {event}? No fan can hold tickets until it is resumed", yes)
    _move_sale(settings_of(ctx), event, "pause", as_json)


@sale_app.command("resume")
def sale_resume(
    ctx: typer.Context,
    event: Annotated[str, typer.Argument(metavar="EVENT", help="Event id or slug.")],
    as_json: JsonOption = False,
) -> None:
    """Sell a paused event again."""
    _move_sale(settings_of(ctx), event, "resume", as_json)
