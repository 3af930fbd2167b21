"""The promises a constraint can carry are carried by constraints: any code path, any client."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import SmallEvent, make_event, make_fan


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=4, ga_capacity=4)


async def _hold(session: AsyncSession, event: SmallEvent, fan_id: uuid.UUID) -> uuid.UUID:
    hold_id = await session.scalar(
        text(
            "INSERT INTO holds (event_id, fan_id, quantity, total_minor, currency, expires_at)"
            " VALUES (:e, :f, 1, 5000, 'GBP', now() + interval '8 minutes') RETURNING id"
        ),
        {"e": event.event_id, "f": fan_id},
    )
    assert hold_id is not None
    return hold_id


async def _order(
    session: AsyncSession, event: SmallEvent, hold_id: uuid.UUID, fan_id: uuid.UUID
) -> uuid.UUID:
    order_id = await session.scalar(
        text(
            "INSERT INTO orders (hold_id, event_id, fan_id, channel, total_minor, currency)"
            " VALUES (:h, :e, :f, 'online', 5000, 'GBP') RETURNING id"
        ),
        {"h": hold_id, "e": event.event_id, "f": fan_id},
    )
    assert order_id is not None
    return order_id


async def _violates(session: AsyncSession, sql: str, params: dict[str, Any], constraint: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        await session.execute(text(sql), params)
    await session.rollback()
    assert constraint in str(caught.value)


async def test_a_held_unit_must_name_its_hold_and_deadline(session: AsyncSession, event: SmallEvent) -> None:
    await _violates(
        session,
        "UPDATE inventory_units SET state = 'held' WHERE seat_id = :s",
        {"s": event.seat_ids[0]},
        "ck_inventory_units_state_owner_consistent",
    )


async def test_a_sold_unit_cannot_also_be_held(session: AsyncSession, event: SmallEvent) -> None:
    fan = await make_fan(session)
    hold = await _hold(session, event, fan)
    order = await _order(session, event, hold, fan)
    await session.commit()
    await _violates(
        session,
        "UPDATE inventory_units SET state = 'sold', order_id = :o, hold_id = :h, held_until = now()"
        " WHERE seat_id = :s",
        {"o": order, "h": hold, "s": event.seat_ids[0]},
        "ck_inventory_units_state_owner_consistent",
    )


async def test_an_available_unit_names_no_owner(session: AsyncSession, event: SmallEvent) -> None:
    fan = await make_fan(session)
    hold = await _hold(session, event, fan)
    await session.commit()
    await _violates(
        session,
        "UPDATE inventory_units SET hold_id = :h WHERE seat_id = :s",
        {"h": hold, "s": event.seat_ids[0]},
        "ck_inventory_units_state_owner_consistent",
    )


async def test_unknown_unit_states_are_refused(session: AsyncSession, event: SmallEvent) -> None:
    await _violates(
        session,
        "UPDATE inventory_units SET state = 'reserved' WHERE seat_id = :s",
        {"s": event.seat_ids[0]},
        "ck_inventory_units_state",
    )


async def test_a_seat_is_on_sale_once_per_event(session: AsyncSession, event: SmallEvent) -> None:
    await _violates(
        session,
        "INSERT INTO inventory_units (event_id, price_tier_id, seat_id) VALUES (:e, :t, :s)",
        {"e": event.event_id, "t": event.seat_tier_id, "s": event.seat_ids[0]},
        "uq_inventory_units_event_id_seat_id",
    )


async def test_a_unit_is_a_seat_or_a_ga_place_not_both(session: AsyncSession, event: SmallEvent) -> None:
    await _violates(
        session,
        "UPDATE inventory_units SET ga_area_id = :a WHERE seat_id = :s",
        {"a": event.ga_area_id, "s": event.seat_ids[0]},
        "ck_inventory_units_seat_xor_ga",
    )


async def test_a_unit_has_at_most_one_active_order_item(session: AsyncSession, event: SmallEvent) -> None:
    fan = await make_fan(session)
    unit = await session.scalar(
        text("SELECT id FROM inventory_units WHERE seat_id = :s"), {"s": event.seat_ids[0]}
    )
    orders = []
    for _ in range(2):
        hold = await _hold(session, event, fan)
        orders.append(await _order(session, event, hold, fan))
    insert_item = (
        "INSERT INTO order_items (order_id, unit_id, price_tier_id, price_minor, currency)"
        " VALUES (:o, :u, :t, 5000, 'GBP')"
    )
    await session.execute(text(insert_item), {"o": orders[0], "u": unit, "t": event.seat_tier_id})
    await session.commit()
    await _violates(
        session,
        insert_item,
        {"o": orders[1], "u": unit, "t": event.seat_tier_id},
        "uq_order_items_active_unit",
    )


async def test_one_order_per_hold(session: AsyncSession, event: SmallEvent) -> None:
    fan = await make_fan(session)
    hold = await _hold(session, event, fan)
    await _order(session, event, hold, fan)
    await session.commit()
    await _violates(
        session,
        "INSERT INTO orders (hold_id, event_id, fan_id, channel, total_minor, currency)"
        " VALUES (:h, :e, :f, 'online', 5000, 'GBP')",
        {"h": hold, "e": event.event_id, "f": fan},
        "uq_orders_hold_id",
    )


async def test_a_hold_has_at_most_one_live_payment(session: AsyncSession, event: SmallEvent) -> None:
    fan = await make_fan(session)
    hold = await _hold(session, event, fan)
    insert_payment = (
        "INSERT INTO payments (hold_id, provider, provider_ref, state, amount_minor, currency)"
        " VALUES (:h, 'offline', :ref, :state, 5000, 'GBP')"
    )
    await session.execute(text(insert_payment), {"h": hold, "ref": "p1", "state": "failed"})
    await session.execute(text(insert_payment), {"h": hold, "ref": "p2", "state": "pending"})
    await session.commit()
    await _violates(
        session, insert_payment, {"h": hold, "ref": "p3", "state": "pending"}, "uq_payments_live_per_hold"
    )


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("currency", "gbp", "ck_price_tiers_currency_iso"),
        ("currency", "POUNDS", "ck_price_tiers_currency_iso"),
        ("price_minor", -1, "ck_price_tiers_price_not_negative"),
    ],
)
async def test_money_is_whole_minor_units_in_an_iso_currency(
    session: AsyncSession, event: SmallEvent, column: str, value: object, constraint: str
) -> None:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - too-long strings fail as DataError
        await session.execute(
            text(f"UPDATE price_tiers SET {column} = :v WHERE id = :t"), {"v": value, "t": event.seat_tier_id}
        )
    await session.rollback()
    assert constraint in str(caught.value) or "value too long" in str(caught.value)


async def test_renewals_are_capped_at_two(session: AsyncSession, event: SmallEvent) -> None:
    fan = await make_fan(session)
    hold = await _hold(session, event, fan)
    await session.execute(text("UPDATE holds SET renewals = 2 WHERE id = :h"), {"h": hold})
    await session.commit()
    await _violates(
        session, "UPDATE holds SET renewals = 3 WHERE id = :h", {"h": hold}, "ck_holds_renewals_capped"
    )


async def test_a_hold_has_exactly_one_owner(session: AsyncSession, event: SmallEvent) -> None:
    await _violates(
        session,
        "INSERT INTO holds (event_id, quantity, total_minor, currency, expires_at)"
        " VALUES (:e, 1, 0, 'GBP', now())",
        {"e": event.event_id},
        "ck_holds_one_owner",
    )


async def test_fan_emails_are_unique_whatever_their_case(session: AsyncSession) -> None:
    await make_fan(session, "Ann@Example.org")
    await _violates(
        session,
        "INSERT INTO fans (email, password_hash) VALUES ('ann@example.org', 'x')",
        {},
        "uq_fans_email_lower",
    )
