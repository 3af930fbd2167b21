"""Creating an event on a 20,000-place layout: how long the one transaction takes.

    python bench/event_create.py [--sections 16 --rows 25 --seats 45 --standing 2000] [--rounds 3]

Builds an arena (``--sections`` blocks of ``--rows`` rows of ``--seats`` seats, and a
standing floor: 20,000 places by default), then ``--rounds`` times creates a draft event on
it with three tiers (``booking.catalog.admin.create_event``: the check that the tiers price
every place once, then every unit in two ``INSERT ... SELECT`` statements) and commits,
then replaces its tiers (``set_tiers``) and puts it on sale (``put_on_sale``, which checks the
coverage again). Reports wall milliseconds for each step, per round.

Uses BOXOFFICE_TEST_DATABASE_URL (a fresh database, dropped after), else an embedded
PostgreSQL. Prints the numbers and writes them to bench/reports/event-create-<time>.json.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from flash_sale import git_commit, servers

from booking import migrations
from booking.catalog import admin
from booking.db import make_async_engine, make_sessionmaker
from booking.holds.policy import HoldPolicy
from tests.catalog_data import arena_tiers, make_arena, new_event

REPORTS = Path(__file__).parent / "reports"


async def _run(database: str, args: argparse.Namespace) -> dict[str, object]:
    engine = make_async_engine(database)
    timings: dict[str, list[float]] = {"create": [], "set_tiers": [], "put_on_sale": []}
    try:
        async with make_sessionmaker(engine)() as session:
            arena = await make_arena(
                session,
                sections=args.sections,
                rows=args.rows,
                seats_per_row=args.seats,
                standing=args.standing,
            )
            for n in range(args.rounds):
                started = time.perf_counter()
                event_id = await admin.create_event(
                    session, new_event(arena, title=f"Bench Night {n}"), limits=HoldPolicy()
                )
                await session.commit()
                timings["create"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await admin.set_tiers(session, event_id, arena_tiers(arena, price=5000))
                await session.commit()
                timings["set_tiers"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await admin.put_on_sale(session, event_id)
                await session.commit()
                timings["put_on_sale"].append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return {
        "places": arena.places,
        **{f"{step}_ms": [round(v * 1000, 1) for v in values] for step, values in timings.items()},
        **{f"{step}_ms_median": round(statistics.median(v) * 1000, 1) for step, v in timings.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--seats", type=int, default=45)
    parser.add_argument("--standing", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="bench-event-") as folder, servers(Path(folder)) as stack:
        migrations.upgrade(stack.database)
        numbers = asyncio.run(_run(stack.database, args))
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "system": platform.platform(),
        },
        **numbers,
    }
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"event-create-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
