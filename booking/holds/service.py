"""The hold lifecycle: create, renew, release, expire, start and fail payment.

Verbs run inside the caller's transaction and do not commit; an error raised here means the
caller must roll back, which undoes everything the verb did (a half-claimed hold included).
Hold state changes are guarded UPDATEs too, with their allowed sources in ``HOLD_MOVES``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking import metrics
from booking.catalog.models import Event, EventStatus, PriceTier
from booking.errors import (
    EventNotFound,
    HoldExpired,
    HoldNotFound,
    HoldStateConflict,
    InvalidRequest,
    InventoryBusy,
    RenewalLimit,
    SaleNotOpen,
    TicketCapReached,
    TierNotFound,
)
from booking.holds.models import LIVE_STATES, Hold, HoldItem, HoldState
from booking.holds.policy import HoldPolicy
from booking.inventory import changes
from booking.inventory import service as inventory
from booking.inventory.models import InventoryUnit, UnitState
from booking.inventory.transitions import Move, guard
from booking.orders.models import Order, OrderItem, OrderItemState
from booking.outbox import Topic, emit
from booking.sqltext import HotStatement, param, sql

S = HoldState

# move -> (states it may start from, state it ends in)
HOLD_MOVES: dict[str, tuple[frozenset[HoldState], HoldState]] = {
    "start_payment": (frozenset({S.ACTIVE, S.FAILED}), S.PAYING),
    "fail_payment": (frozenset({S.PAYING}), S.FAILED),
    "release": (frozenset({S.ACTIVE, S.FAILED}), S.RELEASED),
    "expire": (frozenset({S.ACTIVE}), S.EXPIRED),
    "lapse": (frozenset({S.FAILED}), S.RELEASED),  # a failed payment's hold running out
    # Money that arrives must end as an order or a refund, whatever the hold did meanwhile.
    "confirm": (frozenset({S.ACTIVE, S.PAYING, S.FAILED, S.RELEASED, S.EXPIRED}), S.CONFIRMED),
    "refund": (frozenset({S.ACTIVE, S.PAYING, S.FAILED, S.RELEASED, S.EXPIRED}), S.REFUNDED),
}
ENDED_STATES = frozenset({S.CONFIRMED, S.RELEASED, S.EXPIRED, S.REFUNDED})

ClaimHook = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class Owner:
    """Who a hold belongs to: one fan, or one staff key (box-office sales)."""

    fan_id: uuid.UUID | None = None
    staff_key_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if (self.fan_id is None) == (self.staff_key_id is None):
            raise ValueError("an owner is exactly one of fan_id and staff_key_id")

    def matches(self) -> ColumnElement[bool]:
        if self.fan_id is not None:
            return Hold.fan_id == self.fan_id
        return Hold.staff_key_id == self.staff_key_id


@dataclass(frozen=True)
class SeatSelection:
    seat_ids: tuple[int, ...]


@dataclass(frozen=True)
class GASelection:
    tier_id: uuid.UUID
    quantity: int


Selection = SeatSelection | GASelection


@dataclass(frozen=True)
class HoldItemView:
    unit_id: int
    seat_id: int | None
    price_tier_id: uuid.UUID
    price_minor: int
    currency: str


@dataclass(frozen=True)
class HoldView:
    id: uuid.UUID
    event_id: uuid.UUID
    fan_id: uuid.UUID | None
    staff_key_id: uuid.UUID | None
    state: HoldState
    quantity: int
    total_minor: int
    currency: str
    renewals: int
    created_at: dt.datetime
    expires_at: dt.datetime
    items: tuple[HoldItemView, ...]


async def get_hold(session: AsyncSession, hold_id: uuid.UUID, owner: Owner | None = None) -> HoldView:
    """The hold as it is now. With ``owner``, someone else's hold is reported as not found.

    Raises:
        HoldNotFound: no such hold (for this owner).
    """
    query = select(Hold).where(Hold.id == hold_id).execution_options(populate_existing=True)
    if owner is not None:
        query = query.where(owner.matches())
    hold = await session.scalar(query)
    if hold is None:
        raise HoldNotFound()
    rows = (
        await session.execute(
            select(HoldItem, InventoryUnit.seat_id)
            .join(InventoryUnit, InventoryUnit.id == HoldItem.unit_id)
            .where(HoldItem.hold_id == hold_id)
            .order_by(HoldItem.unit_id)
        )
    ).all()
    items = tuple(
        HoldItemView(item.unit_id, seat_id, item.price_tier_id, item.price_minor, item.currency)
        for item, seat_id in rows
    )
    return HoldView(
        id=hold.id,
        event_id=hold.event_id,
        fan_id=hold.fan_id,
        staff_key_id=hold.staff_key_id,
        state=hold.state,
        quantity=hold.quantity,
        total_minor=hold.total_minor,
        currency=hold.currency,
        renewals=hold.renewals,
        created_at=hold.created_at,
        expires_at=hold.expires_at,
        items=items,
    )


async def lock_hold(
    session: AsyncSession, hold_id: uuid.UUID, owner: Owner | None
) -> tuple[Hold, dt.datetime]:
    """The hold row, locked for this transaction, with the database's idea of now.

    Raises:
        HoldNotFound, InventoryBusy (the hold stayed locked past the lock timeout).
    """
    query = (
        select(Hold, func.now())
        .where(Hold.id == hold_id)
        .with_for_update(of=Hold)
        .execution_options(populate_existing=True)
    )
    if owner is not None:
        query = query.where(owner.matches())
    async with inventory.busy_is_retryable():
        row = (await session.execute(query)).first()
    if row is None:
        raise HoldNotFound()
    return row[0], row[1]


async def move_hold(session: AsyncSession, hold_id: uuid.UUID, move: str, **values: object) -> bool:
    """Apply a hold state move if the hold is in one of its source states. Returns whether it was."""
    sources, target = HOLD_MOVES[move]
    if target in ENDED_STATES:
        values.setdefault("ended_at", func.now())
    result = await session.execute(
        update(Hold)
        .where(Hold.id == hold_id, Hold.state.in_(sources))
        .values(state=target, **values)
        .returning(Hold.id)
    )
    return result.first() is not None


def _validate(selection: Selection, policy: HoldPolicy, owner: Owner) -> int:
    if isinstance(selection, SeatSelection):
        seats = selection.seat_ids
        if not seats:
            raise InvalidRequest("Choose at least one seat.")
        if len(set(seats)) != len(seats):
            raise InvalidRequest("Each seat may be listed once.")
        quantity = len(seats)
    else:
        quantity = selection.quantity
        if quantity < 1:
            raise InvalidRequest("The quantity must be at least 1.")
    # Fans are capped per event (``_check_cap``); a box-office hold is only kept to a size
    # one sale can sensibly be.
    limit = policy.tickets_per_fan if owner.fan_id is not None else policy.units_per_staff_hold
    if quantity > limit:
        raise InvalidRequest(f"At most {limit} tickets can be held at once.")
    return quantity


async def _open_sale(session: AsyncSession, event_id: uuid.UUID, selection: Selection) -> str:
    """Check the event sells now (and, for GA, that the tier is one of its GA tiers) in one
    round trip; returns the event's currency.

    Raises:
        EventNotFound, SaleNotOpen, TierNotFound.
    """
    ga_tier = (
        select(PriceTier.ga_area_id)
        .where(PriceTier.id == selection.tier_id, PriceTier.event_id == event_id)
        .scalar_subquery()
        if isinstance(selection, GASelection)
        else None
    )
    currency = select(PriceTier.currency).where(PriceTier.event_id == event_id).limit(1).scalar_subquery()
    row = (
        await session.execute(
            select(
                Event.status,
                and_(Event.onsale_starts_at <= func.now(), func.now() < Event.onsale_ends_at),
                currency,
                ga_tier if ga_tier is not None else func.now(),
            ).where(Event.id == event_id)
        )
    ).first()
    if row is None:
        raise EventNotFound()
    status, in_window, event_currency, area = row
    if status != EventStatus.ON_SALE or not in_window:
        window = "" if in_window else ", outside the on-sale window"
        raise SaleNotOpen(f"Sale status: {status.value}{window}.")
    if isinstance(selection, GASelection) and area is None:
        raise TierNotFound()
    return str(event_currency or "XXX")


def _tickets_of_fan(fan_id: uuid.UUID | Any, event_id: uuid.UUID | Any) -> ColumnElement[int]:
    """Tickets a fan has for an event: in live holds not past their deadline (a paying hold's
    deadline is its payment grace) and in active orders.

    A payment still unsettled past its grace stops counting: its seats are free for others
    by then, and the reconciliation of stuck payments settles it. Should it succeed late, it
    becomes an order only if its seats are still free."""
    held = (
        select(func.coalesce(func.sum(Hold.quantity), 0))
        .where(
            Hold.fan_id == fan_id,
            Hold.event_id == event_id,
            Hold.state.in_(sorted(LIVE_STATES)),
            Hold.expires_at > func.now(),
        )
        .scalar_subquery()
    )
    bought = (
        select(func.count())
        .select_from(OrderItem)
        .join(Order, Order.id == OrderItem.order_id)
        .where(Order.fan_id == fan_id, Order.event_id == event_id, OrderItem.state == OrderItemState.ACTIVE)
        .scalar_subquery()
    )
    return held + bought


async def tickets_of_fan(session: AsyncSession, fan_id: uuid.UUID, event_id: uuid.UUID) -> int:
    return int(await session.scalar(select(_tickets_of_fan(fan_id, event_id))) or 0)


def _claim_sql(kind: str, *, capped: bool) -> str:
    """The whole hold as one statement: sale open, the fan's cap, the guarded claim, the
    hold row with its total, the price snapshot and the outbox fact.

    ``kind`` is ``seats`` (exactly these seats, locked in id order: overlapping buyers queue
    instead of deadlocking) or ``ga`` (any free places of the tier, from a random id onwards, with
    SKIP LOCKED: concurrent buyers take disjoint rows and never wait on one another). The
    claim's WHERE clause is the transition table's; the sale's state is part of the same
    statement, so a pause committed before it began is seen by the claim itself.

    The hold's id is drawn first, so the units can name it in the same statement; the hold row
    is written whenever the sale is open and the cap allows, even when fewer units were
    claimed than asked: the caller then raises and rolls everything back. Sub-statements of
    one statement share a snapshot, so nothing here reads what another part writes.
    """
    claimable = f"({sql(guard(Move.CLAIM))})"
    if kind == "ga":
        sale_extra = (
            " AND EXISTS (SELECT 1 FROM price_tiers t WHERE t.id = :tier_id"
            " AND t.event_id = :event_id AND t.ga_area_id IS NOT NULL)"
        )
        # Candidates only (the claim's guard below decides): available places from a random
        # point between the tier's lowest and highest free id onwards, wrapping round to the
        # start if the rest holds too few, then places of holds past their deadline if those are
        # not enough. From the lowest id every claim walked past all the places sold before
        # it, and every concurrent claim skipped the same rows its rivals had just locked;
        # from a random point the walk is about quantity / share-still-free rows long and
        # rival claims rarely meet. GA places of a tier are interchangeable, so which ones a
        # fan gets does not matter.
        tier = "inventory_units.event_id = :event_id AND inventory_units.price_tier_id = :tier_id"
        free = f"FROM inventory_units WHERE {tier} AND inventory_units.state = 'available'"
        pick = (
            f"SELECT inventory_units.id {free}"  # noqa: S608 (constants, made at import)
            " AND inventory_units.id >= (SELECT pick_from FROM new)"
            " ORDER BY inventory_units.id LIMIT :quantity FOR UPDATE SKIP LOCKED),"
            f" wrapped AS (SELECT inventory_units.id {free}"
            " AND inventory_units.id < (SELECT pick_from FROM new)"
            " AND (SELECT count(*) FROM free) < :quantity"
            " ORDER BY inventory_units.id LIMIT :quantity FOR UPDATE SKIP LOCKED),"
            " stale AS (SELECT inventory_units.id FROM inventory_units"
            f" WHERE {tier} AND inventory_units.state = 'held' AND inventory_units.held_until < now()"
            " AND EXISTS (SELECT 1 FROM new)"
            " AND (SELECT count(*) FROM free) + (SELECT count(*) FROM wrapped) < :quantity"
            " ORDER BY inventory_units.id LIMIT :quantity FOR UPDATE SKIP LOCKED),"
            " picked AS (SELECT id FROM free UNION ALL SELECT id FROM wrapped UNION ALL SELECT id FROM stale"
            " LIMIT :quantity"
        )
        pick_name = "free"
        # Two probes of the free-places index (its two ends), not a scan.
        pick_from = (
            "(SELECT lo + floor(random() * (hi - lo + 1))::bigint FROM"  # noqa: S608 (constants)
            f" (SELECT min(inventory_units.id) AS lo, max(inventory_units.id) AS hi {free}) AS span)"
        )
    else:
        sale_extra = ""
        pick = (
            "SELECT inventory_units.id FROM inventory_units"  # noqa: S608 (constants, made at import)
            " WHERE inventory_units.event_id = :event_id AND inventory_units.seat_id = ANY(:seat_ids)"
            f" AND {claimable} AND EXISTS (SELECT 1 FROM new)"
            " ORDER BY inventory_units.id FOR UPDATE"
        )
        pick_name = "picked"
        pick_from = "NULL::bigint"
    mine = sql(_tickets_of_fan(param("fan_id"), param("event_id"))) if capped else "0"
    # The event may lower the per-fan cap (never raise it past the configured one) and set
    # its own hold lifetime; both are read from the row the sale check reads anyway. A
    # box-office hold is bounded by its size only.
    cap = "least(coalesce(e.max_tickets_per_fan, :cap), :cap)" if capped else "CAST(:cap AS integer)"
    return (
        "WITH sale AS ("  # noqa: S608 (constants, made at import)
        f" SELECT {cap} AS cap, coalesce(e.hold_ttl_seconds * interval '1 second', :ttl) AS ttl"
        " FROM events e WHERE e.id = :event_id AND e.status = 'on_sale'"
        f" AND e.onsale_starts_at <= now() AND now() < e.onsale_ends_at{sale_extra}),"
        f" mine AS (SELECT {mine} AS already),"
        f" new AS (SELECT gen_random_uuid() AS id, {pick_from} AS pick_from,"
        "  now() + sale.ttl AS expires_at FROM sale, mine"
        "  WHERE mine.already + :quantity <= sale.cap),"
        f" {pick_name} AS ({pick}),"
        " claimed AS ("
        "  UPDATE inventory_units SET state = 'held', hold_id = new.id, held_until = new.expires_at,"
        "   updated_at = now() FROM new"
        f"  WHERE inventory_units.id IN (SELECT id FROM picked) AND {claimable}"
        "  RETURNING inventory_units.id AS unit_id, inventory_units.seat_id, inventory_units.price_tier_id),"
        " priced AS (SELECT c.unit_id, c.seat_id, c.price_tier_id, t.price_minor, t.currency"
        "  FROM claimed c JOIN price_tiers t ON t.id = c.price_tier_id),"
        " hold AS ("
        "  INSERT INTO holds"
        "   (id, event_id, fan_id, staff_key_id, quantity, total_minor, currency, expires_at, ticket_cap)"
        "  SELECT new.id, :event_id, :fan_id, :staff_key_id, :quantity,"
        "   (SELECT coalesce(sum(price_minor), 0) FROM priced),"
        "   (SELECT coalesce(min(currency), 'XXX') FROM priced), new.expires_at,"
        f"   {'CAST((SELECT cap FROM sale) AS smallint)' if capped else 'NULL::smallint'} FROM new"
        "  RETURNING id, created_at, expires_at),"
        " items AS ("
        "  INSERT INTO hold_items (hold_id, unit_id, price_tier_id, price_minor, currency)"
        "  SELECT hold.id, p.unit_id, p.price_tier_id, p.price_minor, p.currency FROM priced p, hold),"
        " fact AS ("
        "  INSERT INTO outbox (topic, payload, catalog_event_id)"
        "  SELECT :topic, jsonb_build_object('event_id', CAST(:event_id AS text),"
        "   'unit_ids', (SELECT jsonb_agg(unit_id ORDER BY unit_id) FROM claimed), 'state', 'held'),"
        "   :event_id FROM hold WHERE EXISTS (SELECT 1 FROM claimed))"
        " SELECT (SELECT count(*) FROM sale), (SELECT already FROM mine), (SELECT cap FROM sale),"
        "  (SELECT count(DISTINCT currency) FROM priced),"
        "  h.id, h.created_at, h.expires_at, p.unit_id, p.seat_id, p.price_tier_id, p.price_minor, p.currency"
        " FROM (SELECT 1) AS one LEFT JOIN hold h ON true LEFT JOIN priced p ON h.id IS NOT NULL"
        " ORDER BY p.unit_id"
    )


_CLAIMS = {
    (kind, capped): HotStatement(_claim_sql(kind, capped=capped))
    for kind in ("seats", "ga")
    for capped in (True, False)
}
_CAP_LOCK = HotStatement("SELECT pg_advisory_xact_lock(hashtextextended(:lock, 0))")


async def lock_fan_cap(session: AsyncSession, fan_id: uuid.UUID, event_id: uuid.UUID) -> None:
    """Serialise, until the caller's transaction ends, everything that adds to one fan's
    tickets for one event (new holds, late confirmations), so two cannot both pass the cap.
    Count in a statement begun after this returns.

    Raises:
        InventoryBusy (the lock stayed taken past the lock timeout).
    """
    async with inventory.busy_is_retryable():
        await _CAP_LOCK.rows(session, {"lock": f"cap:{fan_id}:{event_id}"})


async def create_hold(
    session: AsyncSession,
    *,
    owner: Owner,
    event_id: uuid.UUID,
    selection: Selection,
    policy: HoldPolicy,
    inside_claim: ClaimHook | None = None,
) -> HoldView:
    """Hold seats (all or none) or GA places for ``policy.ttl`` (or the event's own hold
    lifetime), with their prices as of now, within the fan's cap (``policy.tickets_per_fan``,
    or the event's when it is lower).

    One statement (``_claim_sql``), and for a fan one before it: the fan's holds for one
    event are serialised by an advisory lock (released at commit), so two tabs cannot both
    pass the cap. The count must be in a statement begun after the lock: under READ
    COMMITTED a statement sees what was committed when it began, and one begun before the
    wait would miss the hold the other tab just committed. Anything else (another fan,
    another event) never waits here. A failure costs a query or two more, to say exactly why.
    ``inside_claim`` runs after the units are claimed and before the caller commits; tests
    use it to hold the transaction open and widen the race window.

    Raises:
        InvalidRequest, EventNotFound, SaleNotOpen, TierNotFound, TicketCapReached,
        UnknownSeats, SeatsTaken, SoldOut, NotEnoughLeft, InventoryBusy.
    """
    quantity = _validate(selection, policy, owner)
    capped = owner.fan_id is not None
    params: dict[str, object] = {
        "event_id": event_id,
        "fan_id": owner.fan_id,
        "staff_key_id": owner.staff_key_id,
        "quantity": quantity,
        "cap": policy.tickets_per_fan if capped else quantity,
        "ttl": policy.ttl,
        "topic": Topic.UNITS_CHANGED,
    }
    if isinstance(selection, SeatSelection):
        kind = "seats"
        params["seat_ids"] = sorted(set(selection.seat_ids))
    else:
        kind = "ga"
        params["tier_id"] = selection.tier_id
    if capped:
        assert owner.fan_id is not None
        await lock_fan_cap(session, owner.fan_id, event_id)
    async with inventory.busy_is_retryable():
        rows = await _CLAIMS[kind, capped].rows(session, params)
    sale_open, already, cap, currencies, hold_id, created_at, expires_at = rows[0][:7]
    if not sale_open:
        await _open_sale(session, event_id, selection)
        raise SaleNotOpen()  # it opened or closed between the two looks
    if capped and already + quantity > cap:
        metrics.OVERSELL_REJECTIONS.labels("ticket_cap", "hold").inc()
        raise TicketCapReached(int(cap), int(already))
    claimed = [
        inventory.ClaimedUnit(unit_id, seat_id, tier_id)
        for *_, unit_id, seat_id, tier_id, _, _ in rows
        if unit_id
    ]
    if len(claimed) < quantity:
        if isinstance(selection, SeatSelection):
            await inventory.explain_missing_seats(session, event_id, selection.seat_ids, claimed)
        else:
            await inventory.explain_ga_shortfall(session, event_id, selection.tier_id, len(claimed))
    if currencies > 1:
        raise InvalidRequest("These tickets are priced in different currencies; hold them separately.")
    if inside_claim is not None:
        await inside_claim(session)
    changes.note(session, event_id)
    metrics.count_on_commit(session, metrics.HOLDS_CREATED.labels("fan" if capped else "staff"))
    items = tuple(
        HoldItemView(unit_id, seat_id, tier_id, price, currency)
        for *_, unit_id, seat_id, tier_id, price, currency in rows
    )
    return HoldView(
        id=hold_id,
        event_id=event_id,
        fan_id=owner.fan_id,
        staff_key_id=owner.staff_key_id,
        state=S.ACTIVE,
        quantity=quantity,
        total_minor=sum(item.price_minor for item in items),
        currency=items[0].currency,
        renewals=0,
        created_at=created_at,
        expires_at=expires_at,
        items=items,
    )


def _units_payload(event_id: uuid.UUID, unit_ids: Sequence[int], state: UnitState) -> dict[str, object]:
    return {"event_id": str(event_id), "unit_ids": list(unit_ids), "state": state.value}


async def units_changed(
    session: AsyncSession, event_id: uuid.UUID, unit_ids: Sequence[int], state: UnitState
) -> None:
    if unit_ids:
        await emit(
            session, Topic.UNITS_CHANGED, _units_payload(event_id, unit_ids, state), catalog_event_id=event_id
        )
        changes.note(session, event_id)


async def renew_hold(
    session: AsyncSession, *, owner: Owner, hold_id: uuid.UUID, policy: HoldPolicy
) -> HoldView:
    """Extend an active hold by ``policy.ttl`` (or its event's own hold lifetime), at most
    ``policy.max_renewals`` times and never past ``policy.max_lifetime`` from its creation.

    Raises:
        HoldNotFound, HoldStateConflict, HoldExpired, RenewalLimit.
    """
    hold, now = await lock_hold(session, hold_id, owner)
    own_ttl = await session.scalar(select(Event.hold_ttl_seconds).where(Event.id == hold.event_id))
    ttl = policy.ttl if own_ttl is None else dt.timedelta(seconds=own_ttl)
    # Past its deadline is "expired" whether or not the sweeper has tidied it yet: one answer.
    if hold.state == S.EXPIRED:
        raise HoldExpired()
    if hold.state != S.ACTIVE:
        raise HoldStateConflict(hold.state.value, "renew")
    if hold.expires_at <= now:
        raise HoldExpired()
    if hold.renewals >= policy.max_renewals:
        raise RenewalLimit(f"A hold can be renewed {policy.max_renewals} times.")
    deadline = min(now + ttl, hold.created_at + policy.max_lifetime)
    if deadline <= hold.expires_at:
        raise RenewalLimit(f"A hold lasts at most {int(policy.max_lifetime.total_seconds() // 60)} minutes.")
    moved = await inventory.move_hold_units(session, Move.EXTEND, hold_id=hold_id, held_until=deadline)
    if len(moved) != hold.quantity:
        raise HoldExpired()
    await session.execute(
        update(Hold).where(Hold.id == hold_id).values(renewals=Hold.renewals + 1, expires_at=deadline)
    )
    return await get_hold(session, hold_id)


async def release_hold(session: AsyncSession, *, hold_id: uuid.UUID, owner: Owner | None = None) -> HoldView:
    """Give a hold's units back. Releasing a hold that already ended by release or expiry
    changes nothing and returns it.

    Raises:
        HoldNotFound, HoldStateConflict (being paid for, or confirmed).
    """
    hold, _ = await lock_hold(session, hold_id, owner)
    if hold.state in (S.RELEASED, S.EXPIRED):
        return await get_hold(session, hold_id)
    if not await move_hold(session, hold_id, "release"):
        raise HoldStateConflict(hold.state.value, "release")
    units = await inventory.move_hold_units(session, Move.RELEASE, hold_id=hold_id)
    await units_changed(session, hold.event_id, units, UnitState.AVAILABLE)
    by = "fan" if owner is not None and owner.fan_id is not None else "staff"
    metrics.count_on_commit(session, metrics.HOLDS_RELEASED.labels(by))
    return await get_hold(session, hold_id)


async def expire_hold(session: AsyncSession, hold_id: uuid.UUID) -> bool:
    """Tidy a hold whose deadline has passed: its units back to available, an active hold to
    ``expired``, a hold whose payment failed to ``released``. Units a paying hold no longer
    covers are freed; the payment's outcome decides that hold's state. Safe to repeat.

    This only tidies: the claim statement already treats the units as free. Returns whether
    anything changed.
    """
    try:
        hold, now = await lock_hold(session, hold_id, None)
    except HoldNotFound:
        return False
    if hold.expires_at > now and hold.state != S.PAYING:
        return False
    units = await inventory.move_hold_units(session, Move.EXPIRE, hold_id=hold_id)
    changed = bool(units)
    ended = (hold.state == S.ACTIVE and await move_hold(session, hold_id, "expire")) or (
        hold.state == S.FAILED and await move_hold(session, hold_id, "lapse")
    )
    await units_changed(session, hold.event_id, units, UnitState.AVAILABLE)
    if ended:
        metrics.count_on_commit(session, metrics.HOLDS_EXPIRED)
    return changed or ended


def _needs_tidying() -> ColumnElement[bool]:
    stale_units = exists().where(
        InventoryUnit.hold_id == Hold.id,
        InventoryUnit.state == UnitState.HELD,
        InventoryUnit.held_until <= func.now(),
    )
    return or_(
        and_(Hold.state.in_([S.ACTIVE, S.FAILED]), Hold.expires_at <= func.now()),
        and_(Hold.state == S.PAYING, stale_units),
    )


async def sweep_expired(session: AsyncSession, *, limit: int = 500) -> int:
    """Tidy up to ``limit`` holds past their deadline, oldest first; returns how many.
    The caller commits.

    Holds another sweeper (or an expiry job) is working on are skipped, not waited for; so is
    one whose units stay locked past ``lock_timeout`` (a claim taking them this moment). Each
    hold is tidied in a savepoint of its own, so one busy row costs only its own tidy-up,
    which the next sweep does, not the whole batch's.
    """
    ids = (
        await session.scalars(
            select(Hold.id)
            .where(_needs_tidying())
            .order_by(Hold.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    tidied = 0
    for hold_id in ids:
        try:
            async with session.begin_nested(), inventory.busy_is_retryable():
                tidied += await expire_hold(session, hold_id)
        except InventoryBusy:
            continue
    return tidied


async def start_payment(
    session: AsyncSession, *, owner: Owner | None, hold_id: uuid.UUID, policy: HoldPolicy
) -> HoldView:
    """Move a live hold to ``paying`` and keep its units for ``policy.payment_grace`` from now,
    so a fan who is paying is not raced. Retries after a declined payment get the same grace,
    but never past ``created_at + max_lifetime + payment_grace``: declining cards cannot keep
    seats off sale for ever.

    Raises:
        HoldNotFound, HoldStateConflict, HoldExpired (its deadline passed first).
    """
    hold, now = await lock_hold(session, hold_id, owner)
    if hold.state == S.EXPIRED:
        raise HoldExpired()
    if hold.state not in HOLD_MOVES["start_payment"][0]:
        raise HoldStateConflict(hold.state.value, "pay for")
    deadline = min(now + policy.payment_grace, hold.created_at + policy.max_lifetime + policy.payment_grace)
    if hold.expires_at <= now or deadline <= now:
        raise HoldExpired()
    moved = await inventory.move_hold_units(session, Move.EXTEND, hold_id=hold_id, held_until=deadline)
    if len(moved) != hold.quantity:
        raise HoldExpired()
    await move_hold(session, hold_id, "start_payment", expires_at=deadline)
    return await get_hold(session, hold_id)


async def fail_payment(session: AsyncSession, *, hold_id: uuid.UUID) -> HoldView:
    """The payment was declined: the hold keeps its units until its deadline, so the fan may
    try again (``start_payment``) or let go (``release_hold``). Repeating is harmless.

    Raises:
        HoldNotFound, HoldStateConflict (not being paid for).
    """
    hold, _ = await lock_hold(session, hold_id, None)
    if hold.state == S.FAILED:
        return await get_hold(session, hold_id)
    if not await move_hold(session, hold_id, "fail_payment"):
        raise HoldStateConflict(hold.state.value, "fail the payment of")
    return await get_hold(session, hold_id)
