"""Live seat maps: 1,000 idle SSE subscribers on one API worker, and what they cost.

    python bench/seatmap_stream.py [--subscribers 1000] [--buyers 4] [--seconds 30] [--profile F]

Builds a stadium event (20,000 seats in 20 sections, a 5,000-place GA floor) in a database of
its own on the server of BOXOFFICE_TEST_DATABASE_URL (dropped afterwards), else an embedded
PostgreSQL; uses BOXOFFICE_TEST_REDIS_URL, else an embedded Valkey; starts the API under
uvicorn, one worker, rate limits off. Then three rounds of the same buyers (each holds a seat,
keeps it 1.5 s, releases it, again) with the outbox relay run every second in this process,
as the worker runs it:

1. nobody watching: the holds' latency and the API's CPU;
2. with ``--subscribers`` streams of the event's seat map open (aiohttp, in a process of its
   own; all opened at once, each retried after Retry-After when refused): the API's memory
   (RSS) before and after they connect, its CPU while they idle for 20 s (keep-alives
   included); then the round: hold latency, the API's CPU beyond the first round's per
   change sent, and for each change the time from its append to the stream to its arrival at
   every subscriber, and for each hold from its answer to its seat shown taken at every one;
3. after they left: the same round again, to tell their cost from the machine's noise.

Also times the relay's two statements (``live.read_changes``) for batches of changed units.
``--profile F`` samples the API with py-spy during round 2 (collapsed stacks to F). Writes
bench/reports/seatmap-stream-<time>.md. One machine runs everything (API, subscribers,
PostgreSQL, Valkey): the numbers bound from above what separate clients would see.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import multiprocessing
import os
import platform
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg
from redis import Redis
from sqlalchemy import select

from booking import migrations
from booking.accounts.fans import TOKEN_PREFIX, token_digest
from booking.db import make_async_engine, make_sessionmaker, normalize_url
from booking.inventory import live
from booking.inventory.models import InventoryUnit
from console.stack import EmbeddedPostgres, EmbeddedValkey

SECTIONS, ROWS, PER_ROW, GA = 20, 40, 25, 5_000
ROOT = Path(__file__).resolve().parents[1]
REPORTS = Path(__file__).parent / "reports"
IDLE_SECONDS = 20.0
# A hold is kept this long, so the relay's round (every RELAY_EVERY s) sees it taken.
HOLD_SECONDS = 1.5
RELAY_EVERY = 1.0


def _plain(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://")


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def servers(data: Path) -> Iterator[tuple[str, str, str]]:
    """(database URL, Redis URL, description); a database of the bench's own either way."""
    stops = []
    try:
        configured = os.environ.get("BOXOFFICE_TEST_DATABASE_URL")
        if configured:
            name = f"bo_bench_stream_{os.getpid()}"
            admin = _plain(_with_database(configured, "postgres"))
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')

            def drop() -> None:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

            stops.append(drop)
            database, kind = _with_database(configured, name), "configured"
        else:
            pg = EmbeddedPostgres(data / "pg")
            database, kind = pg.start(), "embedded"
            stops.append(pg.stop)
        redis = os.environ.get("BOXOFFICE_TEST_REDIS_URL")
        if not redis:
            valkey = EmbeddedValkey(data / "valkey")
            redis = valkey.start()
            stops.append(valkey.stop)
        yield database, redis, kind
    finally:
        for stop in reversed(stops):
            stop()


def build_stadium(url: str) -> tuple[str, list[int]]:
    """The event, on sale; returns its id and its seats' ids."""
    with psycopg.connect(_plain(url)) as conn:
        venue = conn.execute(
            "INSERT INTO venues (slug, name, city, country, latitude, longitude, timezone)"
            " VALUES ('bench-stream', 'Bench Stadium', 'Benchton', 'GB', 51.5, 0, 'UTC') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        layout = conn.execute(
            "INSERT INTO seating_layouts (venue_id, name) VALUES (%s, 'Bowl') RETURNING id", (venue,)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO sections (layout_id, name, sort_order)"
            " SELECT %s, 'Block ' || s, s FROM generate_series(1, %s) s",
            (layout, SECTIONS),
        )
        conn.execute(
            "INSERT INTO seat_rows (section_id, label, sort_order)"
            " SELECT sec.id, 'R' || r, r FROM sections sec, generate_series(1, %s) r WHERE sec.layout_id = %s",
            (ROWS, layout),
        )
        conn.execute(
            "INSERT INTO seats (row_id, number, x, y, accessible)"
            " SELECT sr.id, n::text, sec.sort_order * 300 + n * 10, sr.sort_order * 12, false"
            " FROM sections sec JOIN seat_rows sr ON sr.section_id = sec.id, generate_series(1, %s) n"
            " WHERE sec.layout_id = %s",
            (PER_ROW, layout),
        )
        area = conn.execute(
            "INSERT INTO ga_areas (layout_id, name, capacity) VALUES (%s, 'Floor', %s) RETURNING id",
            (layout, GA),
        ).fetchone()[0]  # type: ignore[index]
        event = conn.execute(
            "INSERT INTO events (slug, title, performer, category, venue_id, layout_id, city, timezone,"
            " starts_at, ends_at, onsale_starts_at, onsale_ends_at, status) VALUES ('bench-stream',"
            " 'Bench', 'Bench', 'music', %s, %s, 'Benchton', 'UTC', now() + interval '30 days',"
            " now() + interval '31 days', now() - interval '1 day', now() + interval '30 days', 'on_sale')"
            " RETURNING id",
            (venue, layout),
        ).fetchone()[0]  # type: ignore[index]
        tiers = [
            conn.execute(
                "INSERT INTO price_tiers (event_id, name, price_minor, currency, sort_order)"
                " VALUES (%s, %s, %s, 'GBP', %s) RETURNING id",
                (event, name, price, n),
            ).fetchone()[0]  # type: ignore[index]
            for n, (name, price) in enumerate((("Lower", 9500), ("Middle", 6500), ("Upper", 4500)))
        ]
        conn.execute(
            "INSERT INTO inventory_units (event_id, price_tier_id, seat_id)"
            " SELECT %s, (%s::uuid[])[1 + (sec.sort_order - 1) %% 3], seats.id FROM seats"
            " JOIN seat_rows sr ON sr.id = seats.row_id JOIN sections sec ON sec.id = sr.section_id"
            " WHERE sec.layout_id = %s",
            (event, tiers, layout),
        )
        ga_tier = conn.execute(
            "INSERT INTO price_tiers (event_id, name, price_minor, currency, ga_area_id, sort_order)"
            " VALUES (%s, 'Floor', 5500, 'GBP', %s, 9) RETURNING id",
            (event, area),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO inventory_units (event_id, price_tier_id, ga_area_id)"
            " SELECT %s, %s, %s FROM generate_series(1, %s)",
            (event, ga_tier, area, GA),
        )
        seats = [
            row[0]
            for row in conn.execute(
                "SELECT seat_id FROM inventory_units WHERE event_id = %s AND seat_id IS NOT NULL ORDER BY seat_id",
                (event,),
            ).fetchall()
        ]
        conn.commit()
        conn.execute("ANALYZE")
        return str(event), seats


def make_buyers(url: str, count: int) -> list[str]:
    """Signed-in fans, without the cost of Argon2: their bearer tokens."""
    tokens = []
    with psycopg.connect(_plain(url)) as conn:
        for _ in range(count):
            fan = conn.execute(
                "INSERT INTO fans (email, password_hash) VALUES (%s, 'x') RETURNING id",
                (f"bench-{uuid.uuid4().hex[:10]}@example.org",),
            ).fetchone()[0]  # type: ignore[index]
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            conn.execute(
                "INSERT INTO fan_sessions (fan_id, token_hash, expires_at) VALUES (%s, %s, now() + interval '1 day')",
                (fan, token_digest(token)),
            )
            tokens.append(token)
        conn.commit()
    return tokens


def free_port() -> int:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api(database: str, redis: str, data: Path) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    env = {
        **os.environ,
        "BOXOFFICE_DATABASE_URL": database,
        "BOXOFFICE_REDIS_URL": redis,
        "BOXOFFICE_DATA_DIR": str(data / "api"),
        "BOXOFFICE_RATE_LIMITS": "false",
        "BOXOFFICE_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        yield base, psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- the subscribers, in a process of their own ----------------------------------------------


def subscribers_main(
    base: str, path: str, count: int, ready: MpEvent, stop: MpEvent, results: Any, failures: Any
) -> None:
    """Open ``count`` streams, signal ``ready`` once each has its snapshot-version, record when
    every change id arrives at each, until ``stop``; put {id: [arrival times]} on ``results``."""

    async def run() -> None:
        arrivals: dict[str, list[float]] = {}
        opened = 0
        all_open = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
        async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

            async def one() -> None:
                while True:
                    async with session.get(path) as response:
                        if response.status == 200:
                            await read(response)
                            return
                        # Refused at the in-flight bound in the connecting rush (503): back
                        # after Retry-After, as a page's own reconnect logic would be.
                        failures.put(f"status {response.status}")
                        if response.status != 503:
                            return
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

            async def read(response: aiohttp.ClientResponse) -> None:
                nonlocal opened
                entry_id = ""
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("id: "):
                        entry_id = line[4:]
                    elif line == "event: snapshot-version":
                        opened += 1
                        if opened == count:
                            all_open.set()
                    elif line == "event: change":
                        # Wall time, to compare with the entry id's (Redis's clock, same machine).
                        arrivals.setdefault(entry_id, []).append(time.time())

            tasks = [asyncio.create_task(one()) for _ in range(count)]
            await all_open.wait()
            ready.set()
            await asyncio.to_thread(stop.wait)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        results.put(arrivals)

    asyncio.run(run())


# --- the buyers and the relay ------------------------------------------------------------------


@dataclass
class Round:
    """One buyers' round: the holds' latencies, each hold (seat, answer's wall time), and
    each stream entry written meanwhile (id, Redis's wall time of it, seats it shows taken)."""

    latencies: list[float] = field(default_factory=list)
    holds: list[tuple[int, float]] = field(default_factory=list)
    entries: list[tuple[str, float, set[int]]] = field(default_factory=list)


async def buyers_round(
    base: str, event_id: str, tokens: list[str], seats: list[int], seconds: float, redis_url: str
) -> Round:
    """For ``seconds``, each buyer holds a seat, keeps it ``HOLD_SECONDS`` and releases it,
    while the outbox relay runs every ``RELAY_EVERY`` seconds, as the worker runs it."""
    from jobs.outbox import relay_outbox

    found = Round()
    began = time.time()
    stop_at = began + seconds

    async def relayer() -> None:
        # On past the buyers' end, so their last changes are written too.
        while time.time() < stop_at + HOLD_SECONDS + 2 * RELAY_EVERY:
            await relay_outbox()
            await asyncio.sleep(RELAY_EVERY)

    async with aiohttp.ClientSession(base) as session:

        async def buyer(n: int, token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            cycle = 0
            while time.time() < stop_at:
                # Disjoint across buyers; each released before it comes round again.
                seat = seats[(cycle * len(tokens) + n) % len(seats)]
                cycle += 1
                started = time.time()
                async with session.post(
                    "/holds",
                    json={"event_id": event_id, "seat_ids": [seat]},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                ) as answer:
                    body = await answer.json()
                    assert answer.status == 201, body
                answered = time.time()
                found.latencies.append(answered - started)
                found.holds.append((seat, answered))
                await asyncio.sleep(HOLD_SECONDS)
                async with session.delete(f"/holds/{body['id']}", headers=headers) as answer:
                    assert answer.status == 200, await answer.text()
                await asyncio.sleep(0.2)

        await asyncio.gather(relayer(), *(buyer(n, token) for n, token in enumerate(tokens)))
    redis = Redis.from_url(redis_url)
    try:
        for raw_id, fields in redis.xrange(live.stream_key(event_id), min=f"{int(began * 1000)}-0"):
            entry_id = raw_id.decode()
            change = live.decode(fields[b"data"])
            taken = {
                seat for group in change.units if group.state == "unavailable" for seat in group.seat_ids
            }
            # The id's first part is Redis's clock (ms) when the entry was appended.
            found.entries.append((entry_id, int(entry_id.split("-")[0]) / 1000, taken))
    finally:
        redis.close()
    return found


async def time_read_changes(database: str, event_id: str) -> list[tuple[int, float]]:
    """The relay's two statements for batches of n changed units (seats across the tiers)."""
    engine = make_async_engine(database)
    found = []
    try:
        async with make_sessionmaker(engine)() as session:
            ids = [
                row[0]
                for row in (
                    await session.execute(
                        select(InventoryUnit.id)
                        .where(InventoryUnit.event_id == uuid.UUID(event_id))
                        .order_by(InventoryUnit.id)
                    )
                ).all()
            ]
            for n in (1, 100, 1000):
                picked = ids[:: max(1, len(ids) // n)][:n]
                runs = []
                for _ in range(5):
                    started = time.perf_counter()
                    await live.read_changes(session, {uuid.UUID(event_id): picked})
                    runs.append(time.perf_counter() - started)
                    await session.rollback()
                found.append((n, statistics.median(runs) * 1000))
    finally:
        await engine.dispose()
    return found


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _enough_files(count: int) -> None:
    # A socket per subscriber in this process's children and in the API: past the usual 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count * 2 + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _profile(pid: int, target: Path | None) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the API (collapsed stacks, one per line) until interrupted."""
    if target is None:
        return None
    return subprocess.Popen(
        ["py-spy", "record", "--format", "raw", "--nonblocking", "--pid", str(pid), "--output", str(target)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main(count: int, buyers: int, seconds: float, profile: Path | None = None) -> None:
    _enough_files(count)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        data = Path(tmp)
        with servers(data) as (database, redis_url, kind):
            migrations.upgrade(database)
            event_id, seats = build_stadium(database)
            tokens = make_buyers(database, buyers)
            # The relay, run here, reads its servers from the environment as the worker does.
            os.environ["BOXOFFICE_DATABASE_URL"] = database
            os.environ["BOXOFFICE_REDIS_URL"] = redis_url
            path = f"/events/{event_id}/seatmap/stream"
            statements = asyncio.run(time_read_changes(database, event_id))
            with api(database, redis_url, data) as (base, process):
                # Warm every path up once, then measure.
                asyncio.run(buyers_round(base, event_id, tokens[:1], seats, 2, redis_url))
                cpu = _cpu(process)
                baseline = asyncio.run(buyers_round(base, event_id, tokens, seats, seconds, redis_url))
                cpu_baseline = _cpu(process) - cpu
                rss_before = process.memory_info().rss

                context = multiprocessing.get_context("spawn")
                ready, stop = context.Event(), context.Event()
                results, failures = context.Queue(), context.Queue()
                opening = time.monotonic()
                readers = context.Process(
                    target=subscribers_main, args=(base, path, count, ready, stop, results, failures)
                )
                readers.start()
                if not ready.wait(180):
                    raise RuntimeError(f"the subscribers did not all connect: {failures.qsize()} refused")
                open_seconds = time.monotonic() - opening
                refused: dict[str, int] = {}
                while not failures.empty():
                    reason = failures.get()
                    refused[reason] = refused.get(reason, 0) + 1
                time.sleep(2)
                rss_open = process.memory_info().rss
                cpu = _cpu(process)
                time.sleep(IDLE_SECONDS)
                idle_cpu = _cpu(process) - cpu

                spy = _profile(process.pid, profile)
                cpu = _cpu(process)
                watched = asyncio.run(buyers_round(base, event_id, tokens, seats, seconds, redis_url))
                cpu_watched = _cpu(process) - cpu
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                time.sleep(2)
                rss_after = process.memory_info().rss
                stop.set()
                arrivals: dict[str, list[float]] = results.get(timeout=60)
                readers.join(30)
                # Gone again: the same round, to tell the subscribers' cost from the machine's noise.
                cpu = _cpu(process)
                after = asyncio.run(buyers_round(base, event_id, tokens, seats, seconds, redis_url))
                cpu_after_round = _cpu(process) - cpu

    # Each change: from its append to the stream to its arrival at every subscriber.
    from_append = [t - at for entry_id, at, _ in watched.entries for t in arrivals.get(entry_id, [])]
    complete = sum(1 for entry_id, _, _ in watched.entries if len(arrivals.get(entry_id, [])) == count)
    # Each hold: from its answer to its seat shown taken at every subscriber (the first entry
    # after the answer that shows it; the relay's one-second round included).
    from_hold = []
    for seat, answered in watched.holds:
        shown = next(
            (entry_id for entry_id, at, taken in watched.entries if at >= answered and seat in taken), None
        )
        from_hold += [t - answered for t in arrivals.get(shown or "", [])]
    per_subscriber = (rss_open - rss_before) / count
    # What the watched round cost beyond the same round without subscribers, per change.
    extra = cpu_watched - (cpu_baseline + cpu_after_round) / 2
    fanout_ms = extra / max(len(watched.entries), 1) * 1000
    lines = [
        f"# Live seat map: {count} idle SSE subscribers on one API worker"
        f" ({dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M')} UTC)",
        "",
        f"Machine: {_machine()}. PostgreSQL ({kind}) and Valkey/Redis on loopback; API: uvicorn, one"
        f" worker; subscribers: aiohttp in a process of their own. Each round: {buyers} buyers for"
        f" {seconds:.0f} s, each holding a seat for {HOLD_SECONDS} s and releasing it, the outbox"
        f" relay run every {RELAY_EVERY:g} s as the worker runs it. Event: {len(seats)} seats and a"
        f" {GA}-place GA floor. Everything on the same machine.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| API RSS before the subscribers | {rss_before / 2**20:.1f} MiB |",
        f"| API RSS with {count} subscribers connected | {rss_open / 2**20:.1f} MiB |",
        f"| per subscriber | {per_subscriber / 1024:.1f} KiB |",
        f"| API RSS after the buyers' round with them | {rss_after / 2**20:.1f} MiB |",
        f"| time to open all {count} (from another process, all at once) | {open_seconds:.1f} s |",
        f"| refused while opening (in-flight bound), retried after Retry-After | {refused or 'none'} |",
        f"| API CPU while they idle, {IDLE_SECONDS:.0f} s | {idle_cpu * 1000:.0f} ms"
        f" ({idle_cpu / IDLE_SECONDS * 100:.1f}% of a core) |",
        f"| holds per round: nobody / {count} watching / after | {len(baseline.latencies)} /"
        f" {len(watched.latencies)} / {len(after.latencies)} |",
        f"| hold latency, nobody watching: p50 / p99 | {_pct(baseline.latencies, 0.5):.1f} /"
        f" {_pct(baseline.latencies, 0.99):.1f} ms |",
        f"| hold latency, {count} watching: p50 / p99 | {_pct(watched.latencies, 0.5):.1f} /"
        f" {_pct(watched.latencies, 0.99):.1f} ms |",
        f"| hold latency, after they left: p50 / p99 | {_pct(after.latencies, 0.5):.1f} /"
        f" {_pct(after.latencies, 0.99):.1f} ms |",
        f"| API CPU of the round: nobody / {count} watching / after | {cpu_baseline * 1000:.0f} /"
        f" {cpu_watched * 1000:.0f} / {cpu_after_round * 1000:.0f} ms |",
        f"| API CPU per change sent to all {count} | {fanout_ms:.1f} ms ({fanout_ms * 1000 / count:.0f} µs each) |",
        f"| changes written / delivered to every subscriber | {len(watched.entries)} / {complete} |",
        f"| appended to the stream to arrival, every subscriber: p50 / p99 / max | {_pct(from_append, 0.5):.0f}"
        f" / {_pct(from_append, 0.99):.0f} / {max(from_append) * 1000:.0f} ms |",
        f"| hold answered to seat shown taken, every subscriber: p50 / p99 / max | {_pct(from_hold, 0.5):.0f}"
        f" / {_pct(from_hold, 0.99):.0f} / {max(from_hold) * 1000:.0f} ms |",
        "",
        "The relay's statements for one batch (`live.read_changes`, median of 5):",
        "",
        "| changed units | ms |",
        "|---:|---:|",
        *[f"| {n} | {ms:.1f} |" for n, ms in statements],
        "",
        "Hold to seat shown includes waiting for the relay's next round (up to a second). Arrival"
        " times are taken by the subscribers' process, which shares the two cores with the API,"
        " PostgreSQL and Valkey; its own reading of a thousand streams is part of what delays them.",
    ]
    REPORTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    report = REPORTS / f"seatmap-stream-{stamp}.md"
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report: {report}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--buyers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each buyers' round")
    parser.add_argument("--profile", type=Path, help="sample the API with py-spy during the watched round")
    args = parser.parse_args()
    main(args.subscribers, args.buyers, args.seconds, args.profile)
