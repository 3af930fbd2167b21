"""The worker's share of an order: CPU per confirmation email, measured in one process.

    python bench/mail.py [--orders 200] [--quantity 2] [--rounds 3]

In a flash sale the worker daemon's largest job is the confirmation email of every order.
The flash-sale bench measures it only as the daemon's whole CPU, which a busy machine
inflates; this one builds ``--orders`` confirmed orders of ``--quantity`` GA tickets, then
runs the mail job the relay runs (``jobs.mail.send_order_confirmations``, slices of 25,
written as .eml files) ``--rounds`` times over the same orders, and reports the process's
CPU milliseconds per order (``time.process_time``: this process only, so other work on the
machine costs wall time but not these numbers). Run it with ``PYTHONPATH`` set to two
checkouts one after the other to compare them.

Uses BOXOFFICE_TEST_DATABASE_URL (a fresh database, dropped after), else an embedded
PostgreSQL. Prints the numbers and writes them to bench/reports/mail-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from flash_sale import _libpq, build_event, git_commit, make_fans, servers

from booking import migrations
from booking.db import make_async_engine, make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner
from booking.orders.service import confirm_hold
from booking.settings import get_settings

SLICE = 25
REPORTS = Path(__file__).parent / "reports"


async def _orders(database: str, tier: str, fans: list[uuid.UUID], quantity: int) -> list[str]:
    event_id = uuid.UUID(event_id_of(database, tier))
    engine = make_async_engine(database)
    made = []
    try:
        async with make_sessionmaker(engine)() as session:
            for fan in fans:
                view = await holds.create_hold(
                    session,
                    owner=Owner(fan_id=fan),
                    event_id=event_id,
                    selection=GASelection(uuid.UUID(tier), quantity),
                    policy=HoldPolicy(),
                )
                confirmation = await confirm_hold(session, hold_id=view.id)
                await session.commit()
                made.append(str(confirmation.order_id))
    finally:
        await engine.dispose()
    return made


def event_id_of(database: str, tier: str) -> str:
    with psycopg.connect(_libpq(database)) as conn:
        return str(conn.execute("SELECT event_id FROM price_tiers WHERE id = %s", (tier,)).fetchone()[0])  # type: ignore[index]


def _facts(database: str) -> list[tuple[str, str]]:
    with psycopg.connect(_libpq(database)) as conn:
        rows = conn.execute(
            "SELECT payload->>'order_id', event_id::text FROM outbox WHERE topic = 'order.confirmed' ORDER BY id"
        ).fetchall()
    return [(str(order), str(fact)) for order, fact in rows]


async def _round(items: list[tuple[str, str]]) -> tuple[float, float]:
    from jobs.mail import send_order_confirmations

    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(items), SLICE):
        await send_order_confirmations(items[start : start + SLICE])
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--quantity", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="bench-mail-") as folder, servers(Path(folder)) as stack:
        os.environ.update(
            BOXOFFICE_DATABASE_URL=stack.database,
            BOXOFFICE_REDIS_URL=stack.redis,
            BOXOFFICE_DATA_DIR=str(Path(folder) / "data"),
        )
        os.environ.pop("BOXOFFICE_SMTP_HOST", None)
        get_settings.cache_clear()
        migrations.upgrade(stack.database)
        event = build_event(stack.database, ga=args.orders * args.quantity, seats=0, tag=uuid.uuid4().hex[:8])
        assert event.ga_tier is not None
        fans = make_fans(stack.database, args.orders, uuid.uuid4().hex[:8])
        with psycopg.connect(_libpq(stack.database)) as conn:
            ids = [
                uuid.UUID(str(row[0]))
                for row in conn.execute(
                    "SELECT id FROM fans WHERE email = ANY(%s)", ([fan.email for fan in fans],)
                ).fetchall()
            ]
        asyncio.run(_orders(stack.database, event.ga_tier, ids, args.quantity))
        items = _facts(stack.database)
        # One round first to warm imports, fonts and prepared statements: a daemon has them.
        asyncio.run(_round(items[:SLICE]))
        rounds = [asyncio.run(_round(items)) for _ in range(args.rounds)]
    cpu_ms = [cpu * 1000 / len(items) for cpu, _ in rounds]
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "system": platform.platform(),
        },
        "orders": len(items),
        "quantity": args.quantity,
        "cpu_ms_per_order": [round(v, 2) for v in cpu_ms],
        "cpu_ms_per_order_median": round(statistics.median(cpu_ms), 2),
        "wall_ms_per_order": [round(wall * 1000 / len(items), 2) for _, wall in rounds],
    }
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"mail-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
