"""Holds per second: the full service (`create_hold`) against the bare claim statement.

    python bench/holds.py [--seconds 5] [--clients 8,32,128]

For each kind (seated: two specific seats; GA: two places of a tier) and each number of
concurrent clients, it measures for a fixed time:

- service: `booking.holds.service.create_hold` + commit (sale check, cap lock, hold row,
  guarded claim, price snapshot, outbox rows) — what a fan's request costs the database;
- raw SQL: only the guarded claim statement + commit, on a pre-made hold.

Clients take disjoint seats (no contention) so the numbers are the cost of the work, not of
waiting; the race tests cover contention. Uses BOXOFFICE_TEST_DATABASE_URL, else an embedded
PostgreSQL (with max_connections raised so 128 clients each get a connection). Writes a
Markdown report to bench/reports/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import migrations
from booking.db import make_async_engine, make_sessionmaker, normalize_url
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from console.stack import EmbeddedPostgres

SEATS = 100_000
GA = 200_000
REPORTS = Path(__file__).parent / "reports"

SEAT_CLAIM = """
WITH locked AS (
  SELECT id FROM inventory_units WHERE event_id = %(e)s AND seat_id = ANY(%(s)s) ORDER BY id FOR UPDATE
)
UPDATE inventory_units u SET state = 'held', hold_id = %(h)s, held_until = now() + interval '8 minutes',
  updated_at = now()
WHERE u.id IN (SELECT id FROM locked)
  AND (u.state = 'available' OR (u.state = 'held' AND u.held_until < now()))
RETURNING u.id
"""
GA_CLAIM = """
WITH picked AS (
  SELECT id FROM inventory_units WHERE event_id = %(e)s AND price_tier_id = %(t)s
    AND (state = 'available' OR (state = 'held' AND held_until < now()))
  LIMIT %(n)s FOR UPDATE SKIP LOCKED
)
UPDATE inventory_units u SET state = 'held', hold_id = %(h)s, held_until = now() + interval '8 minutes',
  updated_at = now()
WHERE u.id IN (SELECT id FROM picked)
  AND (u.state = 'available' OR (u.state = 'held' AND u.held_until < now()))
RETURNING u.id
"""


def _plain(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://")


def _server(data: Path) -> tuple[str, EmbeddedPostgres | None]:
    configured = os.environ.get("BOXOFFICE_TEST_DATABASE_URL")
    if configured:
        return normalize_url(configured), None
    server = EmbeddedPostgres(data)
    url = server.start()
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        if int(conn.execute("SHOW max_connections").fetchone()[0]) < 300:  # type: ignore[index]
            conn.execute("ALTER SYSTEM SET max_connections = 300")
            restart = True
        else:
            restart = False
    if restart:
        server.stop()
        url = server.start()
    return url, server


async def _setup(url: str) -> tuple[uuid.UUID, uuid.UUID, list[int], list[uuid.UUID]]:
    engine = make_async_engine(url)
    async with make_sessionmaker(engine)() as session:
        for table in ("tickets", "order_items", "orders", "hold_items", "outbox"):
            await session.execute(text(f"DELETE FROM {table}"))
        await session.execute(
            text("UPDATE inventory_units SET state='available', hold_id=NULL, held_until=NULL")
        )
        await session.execute(text("DELETE FROM holds"))
        await session.commit()
        if await session.scalar(text("SELECT count(*) FROM events WHERE slug = 'bench'")) == 0:
            await session.execute(text("SELECT 1"))
            venue = await session.scalar(
                text(
                    "INSERT INTO venues (slug, name, city, country, latitude, longitude, timezone)"
                    " VALUES ('bench', 'Bench Stadium', 'Benchton', 'GB', 51.5, 0, 'UTC') RETURNING id"
                )
            )
            layout = await session.scalar(
                text("INSERT INTO seating_layouts (venue_id, name) VALUES (:v, 'All') RETURNING id"),
                {"v": venue},
            )
            section = await session.scalar(
                text("INSERT INTO sections (layout_id, name) VALUES (:l, 'Bowl') RETURNING id"), {"l": layout}
            )
            await session.execute(
                text(
                    "INSERT INTO seat_rows (section_id, label, sort_order)"
                    " SELECT :s, 'R' || r, r FROM generate_series(1, 600) r"
                ),
                {"s": section},
            )
            await session.execute(
                text(
                    "INSERT INTO seats (row_id, number, x, y) SELECT sr.id, n::text, n, sr.sort_order"
                    " FROM seat_rows sr, generate_series(1, :per_row) n WHERE sr.section_id = :s"
                ),
                {"s": section, "per_row": SEATS // 600},
            )
            area = await session.scalar(
                text(
                    "INSERT INTO ga_areas (layout_id, name, capacity) VALUES (:l, 'Field', :c) RETURNING id"
                ),
                {"l": layout, "c": GA},
            )
            event = await session.scalar(
                text(
                    "INSERT INTO events (slug, title, performer, category, venue_id, layout_id, city, timezone,"
                    " starts_at, ends_at, onsale_starts_at, onsale_ends_at, status) VALUES ('bench', 'Bench',"
                    " 'Bench', 'music', :v, :l, 'Benchton', 'UTC', now() + interval '30 days',"
                    " now() + interval '31 days', now() - interval '1 day', now() + interval '30 days', 'on_sale')"
                    " RETURNING id"
                ),
                {"v": venue, "l": layout},
            )
            seat_tier = await session.scalar(
                text(
                    "INSERT INTO price_tiers (event_id, name, price_minor, currency) VALUES (:e, 'Seat', 5000, 'GBP')"
                    " RETURNING id"
                ),
                {"e": event},
            )
            ga_tier = await session.scalar(
                text(
                    "INSERT INTO price_tiers (event_id, name, price_minor, currency, ga_area_id)"
                    " VALUES (:e, 'Field', 3000, 'GBP', :a) RETURNING id"
                ),
                {"e": event, "a": area},
            )
            await session.execute(
                text(
                    "INSERT INTO inventory_units (event_id, price_tier_id, seat_id)"
                    " SELECT :e, :t, seats.id FROM seats JOIN seat_rows r ON r.id = seats.row_id WHERE r.section_id = :s"
                ),
                {"e": event, "t": seat_tier, "s": section},
            )
            await session.execute(
                text(
                    "INSERT INTO inventory_units (event_id, price_tier_id, ga_area_id)"
                    " SELECT :e, :t, :a FROM generate_series(1, :n)"
                ),
                {"e": event, "t": ga_tier, "a": area, "n": GA},
            )
            await session.execute(
                text(
                    "INSERT INTO fans (email, password_hash) SELECT 'bench' || n || '@example.org', 'x'"
                    " FROM generate_series(1, 128) n"
                )
            )
            await session.commit()
            await session.execute(text("ANALYZE"))
        event_id = await session.scalar(text("SELECT id FROM events WHERE slug = 'bench'"))
        ga_tier = await session.scalar(
            text("SELECT id FROM price_tiers WHERE event_id = :e AND ga_area_id IS NOT NULL"), {"e": event_id}
        )
        seat_ids = list(
            (
                await session.scalars(
                    text(
                        "SELECT seat_id FROM inventory_units WHERE event_id = :e AND seat_id IS NOT NULL ORDER BY seat_id"
                    ),
                    {"e": event_id},
                )
            ).all()
        )
        fans = list(
            (
                await session.scalars(text("SELECT id FROM fans WHERE email LIKE 'bench%' ORDER BY email"))
            ).all()
        )
    await engine.dispose()
    return event_id, ga_tier, seat_ids, fans  # type: ignore[return-value]


async def _timed(clients: int, seconds: float, one: Callable[[int], Awaitable[None]]) -> float:
    stop = time.perf_counter() + seconds
    done = 0

    async def client(n: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one(n)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return done / (time.perf_counter() - started)


async def _reset(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(_plain(url), autocommit=True) as conn:
        await conn.execute("DELETE FROM outbox")
        await conn.execute("DELETE FROM hold_items")
        await conn.execute(
            "UPDATE inventory_units SET state='available', hold_id=NULL, held_until=NULL"
            " WHERE state <> 'available'"
        )
        await conn.execute("DELETE FROM holds")
        await conn.execute("VACUUM ANALYZE inventory_units")


async def bench_service(url: str, kind: str, clients: int, seconds: float, ids: tuple) -> float:  # type: ignore[type-arg]
    event_id, ga_tier, seat_ids, fans = ids
    engine = make_async_engine(url, pool_size=clients, max_overflow=0)
    sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(engine)
    pairs = itertools.count()
    policy = HoldPolicy(tickets_per_fan=10_000)

    async def one(n: int) -> None:
        if kind == "seated":
            i = next(pairs) * 2
            selection: holds.Selection = SeatSelection((seat_ids[i], seat_ids[i + 1]))
        else:
            selection = GASelection(ga_tier, 2)
        async with sessions() as session:
            await holds.create_hold(
                session, owner=Owner(fan_id=fans[n]), event_id=event_id, selection=selection, policy=policy
            )
            await session.commit()

    try:
        return await _timed(clients, seconds, one)
    finally:
        await engine.dispose()


async def bench_raw(url: str, kind: str, clients: int, seconds: float, ids: tuple) -> float:  # type: ignore[type-arg]
    event_id, ga_tier, seat_ids, fans = ids
    conns = [await psycopg.AsyncConnection.connect(_plain(url)) for _ in range(clients)]
    hold_ids = []
    async with await psycopg.AsyncConnection.connect(_plain(url), autocommit=True) as admin:
        for n in range(clients):
            row = await (
                await admin.execute(
                    "INSERT INTO holds (event_id, fan_id, quantity, total_minor, currency, expires_at)"
                    " VALUES (%s, %s, 2, 0, 'GBP', now() + interval '8 minutes') RETURNING id",
                    (event_id, fans[n % len(fans)]),
                )
            ).fetchone()
            hold_ids.append(row[0])  # type: ignore[index]
    pairs = itertools.count()

    async def one(n: int) -> None:
        conn = conns[n]
        if kind == "seated":
            i = next(pairs) * 2
            await conn.execute(
                SEAT_CLAIM, {"e": event_id, "s": [seat_ids[i], seat_ids[i + 1]], "h": hold_ids[n]}
            )
        else:
            await conn.execute(GA_CLAIM, {"e": event_id, "t": ga_tier, "n": 2, "h": hold_ids[n]})
        await conn.commit()

    try:
        return await _timed(clients, seconds, one)
    finally:
        for conn in conns:
            await conn.close()


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


async def main(seconds: float, client_counts: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as data:
        url, server = _server(Path(data))
        try:
            migrations.upgrade(url)
            ids = await _setup(url)
            with psycopg.connect(_plain(url)) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            rows = []
            for kind in ("seated", "GA"):
                for clients in client_counts:
                    await _reset(url)
                    service = await bench_service(url, kind, clients, seconds, ids)
                    await _reset(url)
                    raw = await bench_raw(url, kind, clients, seconds, ids)
                    rows.append((kind, clients, service, raw))
                    print(
                        f"{kind:7} {clients:4} clients: service {service:8.0f} holds/s   raw SQL {raw:8.0f} claims/s"
                        f"   ({service / raw:.0%})",
                        flush=True,
                    )
        finally:
            if server is not None:
                server.stop()
    REPORTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    lines = [
        f"# Holds per second ({stamp} UTC)",
        "",
        f"Machine: {_machine()}. PostgreSQL {version}"
        f" ({'embedded' if server else 'configured'}). {seconds:.0f} s per cell; two units per hold;"
        " clients take disjoint seats (no contention).",
        "",
        "| kind | clients | service holds/s | raw SQL claims/s | service / raw |",
        "|---|---:|---:|---:|---:|",
        *[f"| {k} | {c} | {s:.0f} | {r:.0f} | {s / r:.0%} |" for k, c, s, r in rows],
        "",
        "Service: `create_hold` + commit (sale-window check, per-fan cap under an advisory lock, hold row,"
        " guarded claim, price snapshot, two outbox rows). Raw SQL: the claim statement alone + commit.",
    ]
    path = REPORTS / f"holds-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"report: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="8,32,128")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, [int(c) for c in args.clients.split(",")]))
