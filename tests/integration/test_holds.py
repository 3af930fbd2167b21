"""The hold lifecycle against real PostgreSQL, one behaviour at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.db import make_async_engine, make_sessionmaker
from booking.errors import (
    EventNotFound,
    HoldExpired,
    HoldNotFound,
    HoldStateConflict,
    InvalidRequest,
    InventoryBusy,
    NotEnoughLeft,
    RenewalLimit,
    SaleNotOpen,
    SeatsTaken,
    SoldOut,
    TicketCapReached,
    TierNotFound,
    UnknownSeats,
)
from booking.holds import service as holds
from booking.holds.models import HoldState
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from booking.orders.service import Outcome, confirm_hold, refund_order
from tests.factories import SmallEvent, advance_clock, make_event, make_fan

POLICY = HoldPolicy()


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=10, ga_capacity=5)


@pytest.fixture
async def fan(session: AsyncSession) -> Owner:
    return Owner(fan_id=await make_fan(session))


async def _states(session: AsyncSession, event: SmallEvent) -> dict[str, int]:
    rows = await session.execute(
        text("SELECT state, count(*) FROM inventory_units WHERE event_id = :e GROUP BY state"),
        {"e": event.event_id},
    )
    return {state: count for state, count in rows.all()}


async def _hold_seats(session: AsyncSession, event: SmallEvent, owner: Owner, *seats: int) -> holds.HoldView:
    view = await holds.create_hold(
        session, owner=owner, event_id=event.event_id, selection=SeatSelection(seats), policy=POLICY
    )
    await session.commit()
    return view


async def test_a_seat_hold_takes_the_seats_with_their_prices(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, *event.seat_ids[:3])
    assert view.state == HoldState.ACTIVE
    assert [item.seat_id for item in view.items] == event.seat_ids[:3]
    assert view.total_minor == 3 * 5000
    assert view.currency == "GBP"
    remaining = view.expires_at - view.created_at
    assert remaining == POLICY.ttl
    assert (await _states(session, event))["held"] == 3


async def test_all_or_none_and_the_error_names_the_taken_seats(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    other = Owner(fan_id=await make_fan(session))
    await _hold_seats(session, event, other, event.seat_ids[1], event.seat_ids[3])
    with pytest.raises(SeatsTaken) as caught:
        await _hold_seats(session, event, fan, *event.seat_ids[:4])
    await session.rollback()
    assert caught.value.seat_ids == [event.seat_ids[1], event.seat_ids[3]]
    assert (await _states(session, event))["held"] == 2  # nothing of the failed hold remains
    assert await session.scalar(text("SELECT count(*) FROM holds")) == 1


async def test_unknown_seats_are_named(session: AsyncSession, event: SmallEvent, fan: Owner) -> None:
    with pytest.raises(UnknownSeats) as caught:
        await _hold_seats(session, event, fan, event.seat_ids[0], 999_999)
    assert caught.value.seat_ids == [999_999]


@pytest.mark.parametrize(
    ("selection", "error"),
    [
        (SeatSelection(()), InvalidRequest),
        (SeatSelection((1, 1)), InvalidRequest),
        (GASelection(uuid.uuid4(), 0), InvalidRequest),
        (GASelection(uuid.uuid4(), 9), InvalidRequest),
        (GASelection(uuid.uuid4(), 1), TierNotFound),
    ],
)
async def test_bad_selections_are_refused(
    session: AsyncSession, event: SmallEvent, fan: Owner, selection: holds.Selection, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await holds.create_hold(
            session, owner=fan, event_id=event.event_id, selection=selection, policy=POLICY
        )


async def test_the_seated_tier_is_not_a_ga_tier(session: AsyncSession, event: SmallEvent, fan: Owner) -> None:
    with pytest.raises(TierNotFound):
        await holds.create_hold(
            session,
            owner=fan,
            event_id=event.event_id,
            selection=GASelection(event.seat_tier_id, 1),
            policy=POLICY,
        )


async def test_ga_sells_out_then_fails_fast(session: AsyncSession, event: SmallEvent) -> None:
    owners = [Owner(fan_id=await make_fan(session)) for _ in range(3)]
    await holds.create_hold(
        session,
        owner=owners[0],
        event_id=event.event_id,
        selection=GASelection(event.ga_tier_id, 4),
        policy=POLICY,
    )
    await session.commit()
    with pytest.raises(NotEnoughLeft) as caught:
        await holds.create_hold(
            session,
            owner=owners[1],
            event_id=event.event_id,
            selection=GASelection(event.ga_tier_id, 2),
            policy=POLICY,
        )
    await session.rollback()
    assert caught.value.remaining == 1
    await holds.create_hold(
        session,
        owner=owners[1],
        event_id=event.event_id,
        selection=GASelection(event.ga_tier_id, 1),
        policy=POLICY,
    )
    await session.commit()
    with pytest.raises(SoldOut):
        await holds.create_hold(
            session,
            owner=owners[2],
            event_id=event.event_id,
            selection=GASelection(event.ga_tier_id, 1),
            policy=POLICY,
        )


async def test_ga_finds_the_last_free_places_wherever_they_lie(
    session: AsyncSession, event: SmallEvent
) -> None:
    """The GA pick starts at a random free place and wraps round: with the free places
    scattered by earlier releases, a hold still gets every place there is, never fewer."""
    owners = [Owner(fan_id=await make_fan(session)) for _ in range(3)]

    async def hold(owner: Owner, quantity: int) -> uuid.UUID:
        view = await holds.create_hold(
            session,
            owner=owner,
            event_id=event.event_id,
            selection=GASelection(event.ga_tier_id, quantity),
            policy=POLICY,
        )
        await session.commit()
        assert len(view.items) == quantity
        return view.id

    for _ in range(15):
        first, second = await hold(owners[0], 2), await hold(owners[1], 2)
        with pytest.raises(NotEnoughLeft) as caught:
            await hold(owners[2], 2)
        await session.rollback()
        assert caught.value.remaining == 1
        await holds.release_hold(session, hold_id=first, owner=owners[0])
        await session.commit()
        # Three free now, one of them wherever the last round left it.
        third = await hold(owners[2], 3)
        for hold_id, owner in ((second, owners[1]), (third, owners[2])):
            await holds.release_hold(session, hold_id=hold_id, owner=owner)
        await session.commit()


async def test_the_ticket_cap_counts_holds_and_orders(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    policy = HoldPolicy(tickets_per_fan=4)
    first = await holds.create_hold(
        session,
        owner=fan,
        event_id=event.event_id,
        selection=SeatSelection(tuple(event.seat_ids[:2])),
        policy=policy,
    )
    await confirm_hold(session, hold_id=first.id)
    await session.commit()
    await holds.create_hold(
        session, owner=fan, event_id=event.event_id, selection=GASelection(event.ga_tier_id, 2), policy=policy
    )
    await session.commit()
    with pytest.raises(TicketCapReached) as caught:
        await holds.create_hold(
            session,
            owner=fan,
            event_id=event.event_id,
            selection=GASelection(event.ga_tier_id, 1),
            policy=policy,
        )
    assert caught.value.extra == {"cap": 4, "already": 4}


async def test_a_payment_unsettled_past_its_grace_stops_counting_toward_the_cap(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    policy = HoldPolicy(tickets_per_fan=2)
    stuck = await _hold_seats(session, event, fan, *event.seat_ids[:2])
    await holds.start_payment(session, owner=fan, hold_id=stuck.id, policy=policy)
    await session.commit()
    with pytest.raises(TicketCapReached):
        await holds.create_hold(
            session,
            owner=fan,
            event_id=event.event_id,
            selection=SeatSelection((event.seat_ids[2],)),
            policy=policy,
        )
    await session.rollback()
    await advance_clock(session, policy.payment_grace.total_seconds() + 1)
    fresh = await holds.create_hold(
        session,
        owner=fan,
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[2], event.seat_ids[3])),
        policy=policy,
    )
    assert fresh.quantity == 2


async def test_box_office_holds_are_not_capped_like_a_fan(session: AsyncSession, event: SmallEvent) -> None:
    issued = await create_key(session, "till-1", StaffRole.BOX_OFFICE)
    staff = Owner(staff_key_id=issued.id)
    policy = HoldPolicy(tickets_per_fan=2, units_per_staff_hold=8)
    view = await holds.create_hold(
        session,
        owner=staff,
        event_id=event.event_id,
        selection=SeatSelection(tuple(event.seat_ids[:6])),
        policy=policy,
    )
    assert view.quantity == 6
    with pytest.raises(InvalidRequest):
        await holds.create_hold(
            session,
            owner=staff,
            event_id=event.event_id,
            selection=GASelection(event.ga_tier_id, 9),
            policy=policy,
        )


async def test_declined_retries_cannot_keep_seats_off_sale_for_ever(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    limit = POLICY.max_lifetime + POLICY.payment_grace
    step = POLICY.payment_grace.total_seconds() - 60
    tries = 0
    while True:
        try:
            paying = await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)
        except HoldExpired:
            break
        tries += 1
        assert paying.expires_at - paying.created_at <= limit
        await holds.fail_payment(session, hold_id=view.id)
        await session.commit()
        await advance_clock(session, step)
    assert tries <= limit.total_seconds() // step + 1
    await session.rollback()
    assert await holds.sweep_expired(session) == 1
    await session.commit()
    assert "held" not in await _states(session, event)


async def test_no_sale_outside_the_window_or_when_paused(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    await session.execute(text("UPDATE events SET status = 'paused' WHERE id = :e"), {"e": event.event_id})
    await session.commit()
    with pytest.raises(SaleNotOpen):
        await _hold_seats(session, event, fan, event.seat_ids[0])
    await session.rollback()
    await session.execute(
        text(
            "UPDATE events SET status = 'on_sale', onsale_starts_at = now() + interval '1 day' WHERE id = :e"
        ),
        {"e": event.event_id},
    )
    await session.commit()
    with pytest.raises(SaleNotOpen):
        await _hold_seats(session, event, fan, event.seat_ids[0])
    await session.rollback()
    with pytest.raises(EventNotFound):
        await holds.create_hold(
            session, owner=fan, event_id=uuid.uuid4(), selection=SeatSelection((1,)), policy=POLICY
        )


async def test_a_pause_committed_while_a_hold_is_under_way_is_seen_by_its_claim(
    engine: AsyncEngine, session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    """The sale's state is read by the claim statement itself: a hold stalled after its
    first statement (the cap lock, held here by a rival) and a pause committed meanwhile
    gets no seats. A sale check in a statement of its own, before the claim, would have
    passed and then claimed for a paused sale."""
    assert fan.fan_id is not None
    lock = f"cap:{fan.fan_id}:{event.event_id}"
    async with make_sessionmaker(engine)() as rival, make_sessionmaker(engine)() as operator:
        await rival.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": lock})
        attempt = asyncio.create_task(_hold_seats(session, event, fan, event.seat_ids[0]))
        await asyncio.sleep(0.3)
        assert not attempt.done()
        await operator.execute(
            text("UPDATE events SET status = 'paused' WHERE id = :e"), {"e": event.event_id}
        )
        await operator.commit()
        await rival.commit()
        with pytest.raises(SaleNotOpen):
            await attempt
    await session.rollback()
    assert "held" not in await _states(session, event)


async def test_an_expired_hold_blocks_no_one_before_any_tidy_up(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    await _hold_seats(session, event, fan, *event.seat_ids[:2])
    rival = Owner(fan_id=await make_fan(session))
    with pytest.raises(SeatsTaken):
        await _hold_seats(session, event, rival, *event.seat_ids[:2])
    await session.rollback()
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    taken = await _hold_seats(session, event, rival, *event.seat_ids[:2])
    assert taken.state == HoldState.ACTIVE


async def test_renewal_twice_then_refused_and_never_past_fifteen_minutes(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    await advance_clock(session, 60)
    renewed = await holds.renew_hold(session, owner=fan, hold_id=view.id, policy=POLICY)
    await session.commit()
    assert renewed.renewals == 1
    # now (1 minute in, plus the time the test took) + 8 minutes
    assert (
        dt.timedelta(minutes=9)
        <= renewed.expires_at - renewed.created_at
        < dt.timedelta(minutes=9, seconds=5)
    )
    await advance_clock(session, 7 * 60 + 30)  # 8.5 minutes in: now + 8 would be 16.5
    again = await holds.renew_hold(session, owner=fan, hold_id=view.id, policy=POLICY)
    await session.commit()
    assert again.expires_at - again.created_at == dt.timedelta(minutes=15)  # capped, not 6 + 8
    with pytest.raises(RenewalLimit):
        await holds.renew_hold(session, owner=fan, hold_id=view.id, policy=POLICY)


async def test_renewal_at_the_lifetime_cap_is_refused(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    await advance_clock(session, 7 * 60)
    await holds.renew_hold(session, owner=fan, hold_id=view.id, policy=POLICY)
    await session.commit()
    await advance_clock(session, 7 * 60 + 59)
    with pytest.raises(RenewalLimit):
        await holds.renew_hold(session, owner=fan, hold_id=view.id, policy=POLICY)


async def test_an_expired_hold_cannot_be_renewed_or_paid(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    await advance_clock(session, POLICY.ttl.total_seconds())
    with pytest.raises(HoldExpired):
        await holds.renew_hold(session, owner=fan, hold_id=view.id, policy=POLICY)
    await session.rollback()
    with pytest.raises(HoldExpired):
        await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)


async def test_someone_elses_hold_is_not_found(session: AsyncSession, event: SmallEvent, fan: Owner) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    stranger = Owner(fan_id=await make_fan(session))
    for attempt in (
        holds.get_hold(session, view.id, stranger),
        holds.renew_hold(session, owner=stranger, hold_id=view.id, policy=POLICY),
        holds.release_hold(session, hold_id=view.id, owner=stranger),
        holds.start_payment(session, owner=stranger, hold_id=view.id, policy=POLICY),
    ):
        with pytest.raises(HoldNotFound):
            await attempt
        await session.rollback()


async def test_release_frees_the_seats_and_repeating_it_changes_nothing(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, *event.seat_ids[:2])
    released = await holds.release_hold(session, hold_id=view.id, owner=fan)
    await session.commit()
    assert released.state == HoldState.RELEASED
    assert "held" not in await _states(session, event)
    again = await holds.release_hold(session, hold_id=view.id, owner=fan)
    assert again.state == HoldState.RELEASED


async def test_paying_extends_the_hold_past_its_ttl(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    paying = await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)
    await session.commit()
    assert paying.state == HoldState.PAYING
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)  # past the TTL, within the grace
    rival = Owner(fan_id=await make_fan(session))
    with pytest.raises(SeatsTaken):
        await _hold_seats(session, event, rival, event.seat_ids[0])
    await session.rollback()
    with pytest.raises(HoldStateConflict):
        await holds.release_hold(session, hold_id=view.id, owner=fan)


async def test_confirm_sells_and_issues_one_ticket_per_seat_and_repeats_safely(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, *event.seat_ids[:3])
    await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)
    first = await confirm_hold(session, hold_id=view.id)
    await session.commit()
    assert first.outcome == Outcome.CONFIRMED
    assert (await _states(session, event))["sold"] == 3
    assert (
        await session.scalar(text("SELECT count(*) FROM tickets WHERE order_id = :o"), {"o": first.order_id})
        == 3
    )
    again = await confirm_hold(session, hold_id=view.id)
    assert again.repeated
    assert again.order_id == first.order_id


async def test_a_late_payment_keeps_the_seats_if_still_free(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)
    await session.commit()
    await advance_clock(session, 3600)
    await holds.sweep_expired(session)
    await session.commit()
    assert "held" not in await _states(session, event)
    result = await confirm_hold(session, hold_id=view.id)
    await session.commit()
    assert result.outcome == Outcome.CONFIRMED


async def test_a_late_payment_whose_seats_were_taken_is_refunded(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, *event.seat_ids[:2])
    await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)
    await session.commit()
    await advance_clock(session, 3600)
    rival = Owner(fan_id=await make_fan(session))
    await _hold_seats(session, event, rival, event.seat_ids[1])
    result = await confirm_hold(session, hold_id=view.id)
    await session.commit()
    assert result.outcome == Outcome.REFUND_REQUIRED
    assert (await holds.get_hold(session, view.id)).state == HoldState.REFUNDED
    assert await session.scalar(text("SELECT count(*) FROM orders")) == 0
    topics = (await session.scalars(text("SELECT topic FROM outbox ORDER BY id"))).all()
    assert "hold.refund_required" in topics
    # The seat nobody took is free again; the rival keeps theirs.
    assert await _states(session, event) == {"available": 14, "held": 1}


async def test_refund_returns_the_seats_and_revokes_the_tickets(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, *event.seat_ids[:2])
    confirmation = await confirm_hold(session, hold_id=view.id)
    await session.commit()
    assert confirmation.order_id is not None
    assert await refund_order(session, order_id=confirmation.order_id)
    await session.commit()
    assert "sold" not in await _states(session, event)
    assert await session.scalar(text("SELECT count(*) FROM tickets WHERE state = 'revoked'")) == 2
    assert not await refund_order(session, order_id=confirmation.order_id)


async def test_a_declined_payment_keeps_the_hold_for_another_try(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)
    failed = await holds.fail_payment(session, hold_id=view.id)
    assert failed.state == HoldState.FAILED
    retry = await holds.start_payment(session, owner=fan, hold_id=view.id, policy=POLICY)
    assert retry.state == HoldState.PAYING
    await holds.fail_payment(session, hold_id=view.id)
    released = await holds.release_hold(session, hold_id=view.id, owner=fan)
    await session.commit()
    assert released.state == HoldState.RELEASED


async def test_every_change_writes_its_outbox_fact_in_the_same_transaction(
    session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    await holds.create_hold(
        session,
        owner=fan,
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[0],)),
        policy=POLICY,
    )
    await session.rollback()
    assert await session.scalar(text("SELECT count(*) FROM outbox")) == 0
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    await holds.release_hold(session, hold_id=view.id, owner=fan)
    await session.commit()
    topics = (await session.scalars(text("SELECT topic FROM outbox ORDER BY id"))).all()
    # The seats changing is the news; the hold's own state is in its row (a fact about it
    # that nothing consumes would only pile up on the outbox).
    assert topics == ["units.changed", "units.changed"]


async def test_sweeper_tidies_expired_holds_once(engine: AsyncEngine, event: SmallEvent) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        for seat in event.seat_ids[:4]:
            await _hold_seats(session, event, Owner(fan_id=await make_fan(session)), seat)
        await advance_clock(session, POLICY.ttl.total_seconds() + 1)

    async def sweep() -> int:
        async with sessions() as session:
            done = await holds.sweep_expired(session)
            await session.commit()
            return done

    results = await asyncio.gather(sweep(), sweep(), sweep())
    assert sum(results) == 4
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM holds WHERE state = 'expired'")) == 4
        freed = (
            "SELECT count(*) FROM outbox WHERE topic = 'units.changed' AND payload->>'state' = 'available'"
        )
        assert await session.scalar(text(freed)) == 4


async def test_a_hold_locked_past_the_lock_timeout_answers_busy_not_a_server_error(
    database_url: str, session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    view = await _hold_seats(session, event, fan, event.seat_ids[0])
    await session.commit()
    impatient = make_async_engine(database_url, connect_args={"options": "-c lock_timeout=200ms"})
    try:
        await session.execute(text("SELECT 1 FROM holds WHERE id = :h FOR UPDATE"), {"h": view.id})
        async with make_sessionmaker(impatient)() as other:
            with pytest.raises(InventoryBusy):
                await holds.release_hold(other, hold_id=view.id, owner=fan)
        await session.rollback()
    finally:
        await impatient.dispose()


async def test_a_cap_lock_wait_past_the_lock_timeout_answers_busy_not_a_server_error(
    database_url: str, session: AsyncSession, event: SmallEvent, fan: Owner
) -> None:
    """Another tab of the same fan holding the cap lock too long: "busy, retry" (503), not
    an unmapped lock-timeout error."""
    assert fan.fan_id is not None
    lock = f"cap:{fan.fan_id}:{event.event_id}"
    impatient = make_async_engine(database_url, connect_args={"options": "-c lock_timeout=200ms"})
    try:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": lock})
        async with make_sessionmaker(impatient)() as other:
            with pytest.raises(InventoryBusy):
                await _hold_seats(other, event, fan, event.seat_ids[0])
        await session.rollback()
    finally:
        await impatient.dispose()


async def test_a_busy_hold_costs_the_sweep_only_its_own_tidy_up(
    database_url: str, session: AsyncSession, event: SmallEvent
) -> None:
    """One expired hold whose units stay locked past lock_timeout is skipped (the next sweep
    tidies it); the others in the batch are tidied and committed all the same."""
    views = [
        await _hold_seats(session, event, Owner(fan_id=await make_fan(session)), seat)
        for seat in event.seat_ids[:3]
    ]
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    impatient = make_async_engine(database_url, connect_args={"options": "-c lock_timeout=200ms"})
    try:
        async with make_sessionmaker(impatient)() as locker, make_sessionmaker(impatient)() as sweeper:
            await locker.execute(
                text("SELECT 1 FROM inventory_units WHERE hold_id = :h FOR UPDATE"), {"h": views[1].id}
            )
            assert await holds.sweep_expired(sweeper) == 2
            await sweeper.commit()
            await locker.rollback()
            assert await holds.sweep_expired(sweeper) == 1
            await sweeper.commit()
    finally:
        await impatient.dispose()
    states = (await session.scalars(text("SELECT state FROM holds ORDER BY created_at"))).all()
    assert states == ["expired"] * 3
    assert "held" not in await _states(session, event)
