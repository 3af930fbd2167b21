"""What every fault test checks once the fault is over: the database against the promises and
against what the fans were told.

``audit`` answers a list of broken promises (empty when all hold), each a sentence naming the
rows, so a failing test says what went wrong rather than that a count differed.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

import psycopg

from tests.conftest import _conninfo


def audit(database_url: str, event_id: uuid.UUID, *, told_confirmed: Collection[str]) -> list[str]:
    """The promises, checked for one event:

    - no unit sold twice: each sold unit in exactly one active order item, of its order;
    - sold + held within capacity, per GA area;
    - every confirmed order has as many items as its hold had places, one valid ticket each;
    - every captured payment ends as an order or a refund;
    - no unit kept from sale by a hold that has ended or whose deadline passed;
    - the orders the fans were told are confirmed are exactly the event's confirmed orders.
    """
    e = {"e": event_id}
    broken: list[str] = []
    with psycopg.connect(_conninfo(database_url), autocommit=True) as conn:

        def rows(sql: str) -> list[tuple[object, ...]]:
            return list(conn.execute(sql, e).fetchall())  # type: ignore[call-overload]

        twice = rows(
            "SELECT oi.unit_id, count(*) FROM order_items oi JOIN orders o ON o.id = oi.order_id"
            " WHERE o.event_id = %(e)s AND oi.state = 'active' GROUP BY oi.unit_id HAVING count(*) > 1"
        )
        if twice:
            broken.append(f"units sold twice (unit, orders): {twice}")
        unmatched = rows(
            "SELECT u.id FROM inventory_units u WHERE u.event_id = %(e)s AND u.state = 'sold'"
            " AND NOT EXISTS (SELECT 1 FROM order_items oi WHERE oi.unit_id = u.id"
            " AND oi.order_id = u.order_id AND oi.state = 'active')"
        ) + rows(
            "SELECT oi.unit_id FROM order_items oi JOIN orders o ON o.id = oi.order_id"
            " JOIN inventory_units u ON u.id = oi.unit_id WHERE o.event_id = %(e)s AND oi.state = 'active'"
            " AND (u.state <> 'sold' OR u.order_id IS DISTINCT FROM oi.order_id)"
        )
        if unmatched:
            broken.append(f"sold units and order items that disagree: {unmatched}")
        over = rows(
            "SELECT a.id, a.capacity, count(u.id) FROM ga_areas a JOIN inventory_units u ON u.ga_area_id = a.id"
            " WHERE u.event_id = %(e)s AND u.state IN ('sold', 'held') GROUP BY a.id, a.capacity"
            " HAVING count(u.id) > a.capacity"
        )
        if over:
            broken.append(f"GA areas past capacity (area, capacity, sold + held): {over}")
        short = rows(
            "SELECT o.id, h.quantity,"
            " (SELECT count(*) FROM order_items oi WHERE oi.order_id = o.id AND oi.state = 'active') AS items,"
            " (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.state = 'valid') AS tickets"
            " FROM orders o JOIN holds h ON h.id = o.hold_id"
            " WHERE o.event_id = %(e)s AND o.state = 'confirmed'"
        )
        short = [r for r in short if not (r[1] == r[2] == r[3])]
        if short:
            broken.append(
                f"confirmed orders without all their items or tickets (order, held, items, tickets): {short}"
            )
        lost = rows(
            "SELECT p.id, p.state FROM payments p JOIN holds h ON h.id = p.hold_id"
            " WHERE h.event_id = %(e)s AND p.state = 'succeeded' AND p.order_id IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id)"
        )
        if lost:
            broken.append(f"captured payments with neither an order nor a refund: {lost}")
        kept = rows(
            "SELECT u.id, h.id, h.state FROM inventory_units u JOIN holds h ON h.id = u.hold_id"
            " WHERE u.event_id = %(e)s AND u.state = 'held' AND u.held_until >= now()"
            # A declined payment's hold keeps its units until its deadline, for another card.
            " AND (h.state NOT IN ('active', 'paying', 'failed') OR h.expires_at < now() - interval '5 minutes')"
        ) + rows(
            "SELECT u.id FROM inventory_units u WHERE u.event_id = %(e)s AND u.state = 'held'"
            " AND u.held_until >= now() AND u.hold_id IS NULL"
        )
        if kept:
            broken.append(f"units kept from sale by no live hold (unit, hold, state): {kept}")
        confirmed = {
            str(r[0])
            for r in rows(
                "SELECT id FROM orders WHERE event_id = %(e)s AND state = 'confirmed' AND fan_id IS NOT NULL"
            )
        }
        told = set(told_confirmed)
        if told != confirmed:
            broken.append(
                f"fans were told of {len(told)} orders, the database confirmed {len(confirmed)}:"
                f" told but not confirmed {sorted(told - confirmed)}, confirmed but never told"
                f" {sorted(confirmed - told)}"
            )
    return broken
