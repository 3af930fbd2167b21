"""Hypothesis drives the whole inventory through random sequences of hold, renew, release,
clock advance, start/fail payment, confirm, late confirm, refund and sweep; after every step
the invariants are checked against the rows themselves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.db import make_async_engine, make_sessionmaker
from booking.errors import BookingError
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from booking.orders.service import Outcome, confirm_hold, refund_order
from tests.factories import SmallEvent, advance_clock, make_event, make_fan

T = TypeVar("T")
SEATS = 6
GA = 6
POLICY = HoldPolicy(tickets_per_fan=5)


class Context:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sessions: async_sessionmaker[AsyncSession],
        event: SmallEvent,
        owners: list[Owner],
    ) -> None:
        self.loop = loop
        self.sessions = sessions
        self.event = event
        self.owners = owners


def build_machine(ctx: Context) -> type[RuleBasedStateMachine]:
    event = ctx.event

    class InventoryMachine(RuleBasedStateMachine):
        holds_made = Bundle("holds")
        orders_made = Bundle("orders")

        def __init__(self) -> None:
            super().__init__()
            self.run(self._reset)

        def run(self, step: Callable[[AsyncSession], Awaitable[T]]) -> T | None:
            async def go() -> T | None:
                async with ctx.sessions() as session:
                    # The GA pick starts at a random free place: the same seed for every step
                    # makes a replayed example pick the same places, as hypothesis requires.
                    await session.execute(text("SELECT setseed(0.5)"))
                    try:
                        result = await step(session)
                        await session.commit()
                        return result
                    except BookingError:
                        await session.rollback()
                        return None

            return ctx.loop.run_until_complete(go())

        @staticmethod
        async def _reset(session: AsyncSession) -> None:
            await session.execute(
                text(
                    "UPDATE inventory_units SET state = 'available', hold_id = NULL, held_until = NULL, order_id = NULL"
                )
            )
            for table in ("tickets", "order_items", "orders", "hold_items", "holds", "outbox"):
                await session.execute(text(f"DELETE FROM {table}"))

        # --- rules -----------------------------------------------------------------------

        @rule(
            target=holds_made,
            fan=st.integers(0, 2),
            seats=st.lists(st.sampled_from(event.seat_ids), min_size=1, max_size=3, unique=True),
        )
        def hold_seats(self, fan: int, seats: list[int]) -> Any:
            view = self.run(
                lambda s: holds.create_hold(
                    s,
                    owner=ctx.owners[fan],
                    event_id=event.event_id,
                    selection=SeatSelection(tuple(seats)),
                    policy=POLICY,
                )
            )
            return multiple(view.id) if view else multiple()

        @rule(target=holds_made, fan=st.integers(0, 2), quantity=st.integers(1, 3))
        def hold_ga(self, fan: int, quantity: int) -> Any:
            view = self.run(
                lambda s: holds.create_hold(
                    s,
                    owner=ctx.owners[fan],
                    event_id=event.event_id,
                    selection=GASelection(event.ga_tier_id, quantity),
                    policy=POLICY,
                )
            )
            return multiple(view.id) if view else multiple()

        @rule(hold_id=holds_made)
        def renew(self, hold_id: uuid.UUID) -> None:
            self.run(lambda s: self._renew(s, hold_id))

        @staticmethod
        async def _renew(session: AsyncSession, hold_id: uuid.UUID) -> None:
            view = await holds.get_hold(session, hold_id)
            owner = Owner(fan_id=view.fan_id)
            await holds.renew_hold(session, owner=owner, hold_id=hold_id, policy=POLICY)

        @rule(hold_id=holds_made)
        def release(self, hold_id: uuid.UUID) -> None:
            self.run(lambda s: holds.release_hold(s, hold_id=hold_id))

        @rule(seconds=st.sampled_from([30, 200, 500, 1000]))
        def advance(self, seconds: int) -> None:
            ctx.loop.run_until_complete(self._advance(seconds))

        @staticmethod
        async def _advance(seconds: int) -> None:
            async with ctx.sessions() as session:
                await advance_clock(session, seconds)

        @rule(hold_id=holds_made)
        def start_payment(self, hold_id: uuid.UUID) -> None:
            self.run(lambda s: holds.start_payment(s, owner=None, hold_id=hold_id, policy=POLICY))

        @rule(hold_id=holds_made)
        def fail_payment(self, hold_id: uuid.UUID) -> None:
            self.run(lambda s: holds.fail_payment(s, hold_id=hold_id))

        @rule(target=orders_made, hold_id=holds_made)
        def confirm(self, hold_id: uuid.UUID) -> Any:
            result = self.run(lambda s: confirm_hold(s, hold_id=hold_id))
            if result is not None and result.outcome == Outcome.CONFIRMED and not result.repeated:
                return multiple(result.order_id)
            return multiple()

        @rule(target=orders_made, hold_id=holds_made)
        def late_confirm(self, hold_id: uuid.UUID) -> Any:
            """The payment lands an hour late: keep the seats if free, else refund."""
            self.advance(3600)
            return self.confirm(hold_id)

        @rule(target=holds_made, hold_id=holds_made)
        def rival_takes_after_expiry(self, hold_id: uuid.UUID) -> Any:
            """The dangerous interleaving in one step: a hold's deadline passes and another
            fan claims the very same units; a later confirm of the first must not take them."""
            self.advance(500)
            return multiple(*filter(None, [self.run(lambda s: self._take_over(s, hold_id))]))

        @staticmethod
        async def _take_over(session: AsyncSession, hold_id: uuid.UUID) -> uuid.UUID:
            view = await holds.get_hold(session, hold_id)
            owner = next(o for o in ctx.owners if o.fan_id != view.fan_id)
            seats = tuple(i.seat_id for i in view.items if i.seat_id is not None)
            # GA places are picked, not named: asking for every place that can be claimed
            # now makes sure the expired hold's own places are among them.
            claimable = await session.scalar(
                text(
                    "SELECT count(*) FROM inventory_units WHERE price_tier_id = :t AND (state = 'available'"
                    " OR (state = 'held' AND held_until < now()))"
                ),
                {"t": event.ga_tier_id},
            )
            selection: holds.Selection = (
                SeatSelection(seats) if seats else GASelection(event.ga_tier_id, max(int(claimable or 0), 1))
            )
            taken = await holds.create_hold(
                session, owner=owner, event_id=event.event_id, selection=selection, policy=POLICY
            )
            return taken.id

        @rule(target=orders_made, hold_id=holds_made, quantity=st.integers(1, 3))
        def buy_more_then_late_confirm(self, hold_id: uuid.UUID, quantity: int) -> Any:
            """The cap's dangerous interleaving in one step: a hold's deadline passes (it
            stops counting toward its fan's cap), the same fan buys other places, and only
            then does the first hold's payment land."""
            self.advance(3600)
            fresh = self.run(lambda s: self._buy_as_owner_of(s, hold_id, quantity))
            late = self.confirm(hold_id)
            return multiple(*filter(None, [fresh]), *late.values)

        @staticmethod
        async def _buy_as_owner_of(
            session: AsyncSession, hold_id: uuid.UUID, quantity: int
        ) -> uuid.UUID | None:
            view = await holds.get_hold(session, hold_id)
            owner = next(o for o in ctx.owners if o.fan_id == view.fan_id)
            fresh = await holds.create_hold(
                session,
                owner=owner,
                event_id=event.event_id,
                selection=GASelection(event.ga_tier_id, quantity),
                policy=POLICY,
            )
            confirmed = await confirm_hold(session, hold_id=fresh.id)
            return confirmed.order_id if confirmed.outcome == Outcome.CONFIRMED else None

        @rule(order_id=orders_made)
        def refund(self, order_id: uuid.UUID) -> None:
            self.run(lambda s: refund_order(s, order_id=order_id))

        @rule()
        def sweep(self) -> None:
            self.run(lambda s: holds.sweep_expired(s))

        # --- invariants ------------------------------------------------------------------

        @invariant()
        def inventory_is_consistent(self) -> None:
            ctx.loop.run_until_complete(self._check())

        @staticmethod
        async def _check() -> None:
            async with ctx.sessions() as session:

                async def count(sql: str) -> int:
                    return int(await session.scalar(text(sql)) or 0)

                # Each unit is in exactly one state, and all units are accounted for.
                assert (
                    await count(
                        "SELECT count(*) FROM inventory_units WHERE state IN ('available', 'held', 'sold', 'blocked')"
                    )
                    == SEATS + GA
                )
                # Held + sold never exceeds capacity, per tier.
                assert (
                    await count(
                        "SELECT count(*) FROM (SELECT price_tier_id FROM inventory_units WHERE state <> 'available'"
                        " GROUP BY price_tier_id HAVING count(*) > 6) t"
                    )
                    == 0
                )
                # A held unit belongs to a hold that may hold units; a sold one to a confirmed order.
                assert (
                    await count(
                        "SELECT count(*) FROM inventory_units u JOIN holds h ON h.id = u.hold_id"
                        " WHERE u.state = 'held' AND h.state NOT IN ('active', 'paying', 'failed')"
                    )
                    == 0
                )
                assert (
                    await count(
                        "SELECT count(*) FROM inventory_units u LEFT JOIN orders o ON o.id = u.order_id"
                        " WHERE u.state = 'sold' AND (o.id IS NULL OR o.state <> 'confirmed')"
                    )
                    == 0
                )
                # No unit is in two live holds or orders: a live hold before its deadline owns
                # every unit it was given, and each sold unit has exactly one active order item
                # (of the order it is sold to).
                assert (
                    await count(
                        "SELECT count(*) FROM holds h WHERE h.state IN ('active', 'paying', 'failed')"
                        " AND h.expires_at > now() AND h.quantity <>"
                        " (SELECT count(*) FROM inventory_units u WHERE u.hold_id = h.id AND u.state = 'held')"
                    )
                    == 0
                )
                assert (
                    await count(
                        "SELECT count(*) FROM inventory_units u WHERE u.state = 'sold' AND 1 <>"
                        " (SELECT count(*) FROM order_items i WHERE i.unit_id = u.id AND i.state = 'active'"
                        "  AND i.order_id = u.order_id)"
                    )
                    == 0
                )
                assert (
                    await count(
                        "SELECT count(*) FROM order_items i JOIN inventory_units u ON u.id = i.unit_id"
                        " WHERE i.state = 'active' AND (u.state <> 'sold' OR u.order_id <> i.order_id)"
                    )
                    == 0
                )
                # No fan owns more tickets than the cap, however late their payments landed.
                assert (
                    await count(
                        "SELECT count(*) FROM (SELECT o.fan_id FROM order_items i"
                        " JOIN orders o ON o.id = i.order_id WHERE i.state = 'active' AND o.fan_id IS NOT NULL"
                        f" GROUP BY o.fan_id, o.event_id HAVING count(*) > {POLICY.tickets_per_fan}) t"
                    )
                    == 0
                )
                # Counts equal the rows.
                assert (
                    await count(
                        "SELECT count(*) FROM holds h WHERE h.quantity <>"
                        " (SELECT count(*) FROM hold_items i WHERE i.hold_id = h.id)"
                    )
                    == 0
                )
                assert (
                    await count(
                        "SELECT count(*) FROM holds h WHERE h.total_minor <>"
                        " (SELECT coalesce(sum(price_minor), 0) FROM hold_items i WHERE i.hold_id = h.id)"
                    )
                    == 0
                )
                assert (
                    await count(
                        "SELECT count(*) FROM holds h LEFT JOIN orders o ON o.hold_id = h.id"
                        " WHERE (h.state = 'confirmed') <> (o.id IS NOT NULL)"
                    )
                    == 0
                )
                assert (
                    await count(
                        "SELECT count(*) FROM orders o WHERE"
                        " (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) <>"
                        " (SELECT quantity FROM holds h WHERE h.id = o.hold_id)"
                        " OR (SELECT count(*) FROM tickets t WHERE t.order_id = o.id) <>"
                        " (SELECT count(*) FROM order_items i WHERE i.order_id = o.id)"
                        " OR (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.state = 'valid') <>"
                        " (SELECT count(*) FROM order_items i WHERE i.order_id = o.id AND i.state = 'active')"
                    )
                    == 0
                )
                # Money: a refunded hold has a refund request on the outbox.
                assert (
                    await count(
                        "SELECT count(*) FROM holds h WHERE h.state = 'refunded' AND NOT EXISTS"
                        " (SELECT 1 FROM outbox WHERE topic = 'hold.refund_required'"
                        "  AND payload ->> 'hold_id' = h.id::text)"
                    )
                    == 0
                )

    return InventoryMachine


def test_inventory_invariants_hold_for_any_sequence(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    engine = make_async_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)

    async def prepare() -> Context:
        async with sessions() as session:
            event = await make_event(session, seats=SEATS, ga_capacity=GA)
            owners = [Owner(fan_id=await make_fan(session)) for _ in range(3)]
        return Context(loop, sessions, event, owners)

    try:
        ctx = loop.run_until_complete(prepare())
        run_state_machine_as_test(
            build_machine(ctx),
            settings=settings(
                max_examples=40,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
