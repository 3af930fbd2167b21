"""Gate check-ins per second: the full service (`check_in`) against the bare guarded update.

    python bench/checkin.py [--seconds 5] [--gates 1,8,32] [--tickets 3000]

Sells every seat of the demo's largest seated event at a till, signs a code per ticket, then
for each number of concurrent gates measures for a fixed time:

- service: `booking.tickets.checkin.check_in` + commit (signature check, the guarded admission,
  a scan row) — what one scan at a gate costs;
- raw SQL: only the guarded admission statement + commit.

Gates scan disjoint tickets (every scan admits), so the numbers are the cost of the work; the
race test covers many gates on one ticket. Tickets are un-admitted between rows. Uses
BOXOFFICE_TEST_DATABASE_URL, else an embedded PostgreSQL. Writes a Markdown report to
bench/reports/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking import migrations
from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.catalog.demo import load_demo
from booking.catalog.models import Event
from booking.db import make_async_engine, make_sessionmaker, normalize_url
from booking.holds.policy import HoldPolicy
from booking.holds.service import SeatSelection
from booking.inventory.models import InventoryUnit
from booking.payments import box_office
from booking.tickets.checkin import check_in
from booking.tickets.service import ticket_token
from console.stack import EmbeddedPostgres

REPORTS = Path(__file__).parent / "reports"
ADMIT = """
UPDATE tickets SET checked_in_at = now(), checked_in_gate = %(g)s
WHERE id = %(t)s AND state = 'valid' AND checked_in_at IS NULL
RETURNING id
"""


def _plain(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://")


async def _sell(url: str, want: int, key: Ed25519PrivateKey) -> list[tuple[uuid.UUID, str]]:
    """Sell up to ``want`` seats of the biggest seated event at a till; return (ticket, code)."""
    engine = make_async_engine(url)
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        await load_demo(session)
        till = (await create_key(session, f"bench-till-{uuid.uuid4().hex[:6]}", StaffRole.BOX_OFFICE)).id
        # Let the bench sell whatever the demo has on sale now, whatever today's date.
        await session.execute(
            text("UPDATE events SET onsale_starts_at = now() - interval '1 day' WHERE status = 'on_sale'")
        )
        await session.commit()
        event_id: uuid.UUID | None = None
        seats: list[int] = []
        for event in await session.scalars(select(Event.id)):
            ids = list(
                await session.scalars(
                    select(InventoryUnit.seat_id)
                    .where(InventoryUnit.event_id == event, InventoryUnit.seat_id.is_not(None))
                    .order_by(InventoryUnit.seat_id)
                )
            )
            if len(ids) > len(seats):
                event_id, seats = event, [int(i) for i in ids if i is not None]
    assert event_id is not None
    sold: list[uuid.UUID] = []
    policy = HoldPolicy()
    for start in range(0, min(want, len(seats)), 100):
        async with sessions() as session:
            sale = await box_office.start_sale(
                session,
                staff_key_id=till,
                event_id=event_id,
                selection=SeatSelection(tuple(seats[start : start + 100])),
                policy=policy,
            )
            paid = await box_office.take_payment(
                session, hold_id=sale.id, staff_key_id=till, method="card_present", reference=f"B{start}"
            )
            await session.commit()
            sold += [line.ticket_id for line in paid.order.lines if line.ticket_id is not None]
    async with sessions() as session:
        codes = [(ticket, await ticket_token(session, ticket, signing_key=key)) for ticket in sold]
    await engine.dispose()
    return codes


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE tickets SET checked_in_at = NULL, checked_in_gate = NULL"))
        await conn.execute(text("DELETE FROM ticket_scans"))


async def _service_row(
    url: str, codes: list[tuple[uuid.UUID, str]], gates: int, seconds: float, key: Ed25519PrivateKey
) -> float:
    engine = make_async_engine(url, pool_size=gates, max_overflow=0)
    await _reset(engine)
    sessions = make_sessionmaker(engine)
    queue = iter(codes)
    admitted = 0
    deadline = time.monotonic() + seconds

    async def gate(n: int) -> None:
        nonlocal admitted
        for _, code in queue:
            if time.monotonic() > deadline:
                return
            async with sessions() as session:
                scan = await check_in(
                    session, code, gate=f"gate-{n}", public_keys=[key.public_key()], staff_key_id=None
                )
                await session.commit()
            assert scan.result.value == "admitted", scan
            admitted += 1

    started = time.monotonic()
    await asyncio.gather(*(gate(n) for n in range(gates)))
    elapsed = time.monotonic() - started
    await engine.dispose()
    return admitted / elapsed


async def _raw_row(url: str, codes: list[tuple[uuid.UUID, str]], gates: int, seconds: float) -> float:
    engine = make_async_engine(url)
    await _reset(engine)
    await engine.dispose()
    queue = iter(codes)
    admitted = 0
    deadline = time.monotonic() + seconds

    async def gate(n: int) -> None:
        nonlocal admitted
        async with await psycopg.AsyncConnection.connect(_plain(url), autocommit=False) as conn:
            for ticket, _ in queue:
                if time.monotonic() > deadline:
                    return
                row = await (await conn.execute(ADMIT, {"g": f"gate-{n}", "t": ticket})).fetchone()
                await conn.commit()
                assert row is not None
                admitted += 1

    started = time.monotonic()
    await asyncio.gather(*(gate(n) for n in range(gates)))
    return admitted / (time.monotonic() - started)


async def main(seconds: float, gate_counts: list[int], tickets: int) -> None:
    configured = os.environ.get("BOXOFFICE_TEST_DATABASE_URL")
    server: EmbeddedPostgres | None = None
    with tempfile.TemporaryDirectory(prefix="bench-checkin-") as data:
        if configured:
            url = normalize_url(configured)
        else:
            server = EmbeddedPostgres(Path(data))
            url = server.start()
        try:
            migrations.upgrade(url)
            key = Ed25519PrivateKey.generate()
            codes = await _sell(url, tickets, key)
            print(f"{len(codes)} tickets sold and signed")
            rows = []
            for gates in gate_counts:
                service = await _service_row(url, codes, gates, seconds, key)
                raw = await _raw_row(url, codes, gates, seconds)
                rows.append((gates, service, raw))
                print(f"{gates:>3} gates: service {service:7.0f}/s   raw {raw:7.0f}/s   {service / raw:4.0%}")
        finally:
            if server is not None:
                server.stop()
    _report(rows, seconds, len(codes))


def _report(rows: list[tuple[int, float, float]], seconds: float, tickets: int) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    lines = [
        f"# Gate check-ins per second ({stamp} UTC)",
        "",
        f"Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. PostgreSQL (embedded unless configured). "
        f"{seconds:g} s per cell over {tickets} sold tickets; every scan admits a different ticket. "
        "A cell ends early when the tickets run out; its rate is over the time it ran.",
        "",
        "| gates | service scans/s | raw SQL admissions/s | service / raw |",
        "|---:|---:|---:|---:|",
        *(f"| {g} | {s:.0f} | {r:.0f} | {s / r:.0%} |" for g, s, r in rows),
        "",
        "Service: `check_in` + commit (Ed25519 verification, the guarded admission, a scan row). "
        "Raw SQL: the guarded `UPDATE tickets ... WHERE checked_in_at IS NULL` + commit.",
    ]
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"checkin-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"report: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Gate check-ins per second.")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--gates", default="1,8,32")
    parser.add_argument("--tickets", type=int, default=3000)
    args = parser.parse_args()
    counts = [int(n) for n in args.gates.split(",")]
    asyncio.run(main(args.seconds, counts, args.tickets))
