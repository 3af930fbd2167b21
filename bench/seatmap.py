"""Seat-map latency: `GET /events/{id}/seatmap` for a 20,000-seat event under concurrent fans.

    python bench/seatmap.py [--seconds 5] [--clients 16,64] [--workers 1]

Builds a stadium (20 sections x 40 rows x 25 seats, plus a 5,000-place GA floor) in
BOXOFFICE_TEST_DATABASE_URL, else an embedded PostgreSQL, with BOXOFFICE_TEST_REDIS_URL, else
an embedded Valkey; starts the API under uvicorn on a free loopback port; then, for each
number of concurrent clients, measures for a fixed time:

- cached: every client fetches the full map (gzip accepted, as browsers do);
- revalidate: every client sends the ETag it holds (`If-None-Match`), as a polling page does;
- churn: full fetches while a writer changes a seat and bumps the event's seat-map version
  ten times a second, as the outbox consumer does during an on-sale, so snapshots keep
  being rebuilt underneath the readers;
- cold: the snapshot and layout are deleted, and all clients ask at once (one rebuild).

Writes p50/p95/p99 latency and requests per second to bench/reports/seatmap-<time>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from redis import Redis

from booking import migrations
from booking.db import normalize_url
from booking.inventory.seatmap import version_key
from console.stack import EmbeddedPostgres, EmbeddedValkey

SECTIONS, ROWS, PER_ROW = 20, 40, 25
GA = 5_000
ROOT = Path(__file__).resolve().parents[1]
REPORTS = Path(__file__).parent / "reports"


def _plain(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def servers(data: Path) -> Iterator[tuple[str, str, str]]:
    """(database URL, Redis URL, description), starting embedded servers for what is not set."""
    stops = []
    try:
        database = os.environ.get("BOXOFFICE_TEST_DATABASE_URL")
        if database:
            database, kind = normalize_url(database), "configured"
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


def build_stadium(url: str) -> str:
    """The bench event (made once per database); returns its id."""
    with psycopg.connect(_plain(url)) as conn:
        found = conn.execute("SELECT id FROM events WHERE slug = 'bench-seatmap'").fetchone()
        if found:
            return str(found[0])
        venue = conn.execute(
            "INSERT INTO venues (slug, name, city, country, latitude, longitude, timezone)"
            " VALUES ('bench-seatmap', 'Bench Stadium', 'Benchton', 'GB', 51.5, 0, 'UTC') RETURNING id"
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
            " SELECT sr.id, n::text, sec.sort_order * 300 + n * 10, sr.sort_order * 12,"
            "  sr.sort_order = 1 AND n IN (1, %s)"
            " FROM sections sec JOIN seat_rows sr ON sr.section_id = sec.id, generate_series(1, %s) n"
            " WHERE sec.layout_id = %s",
            (PER_ROW, PER_ROW, layout),
        )
        area = conn.execute(
            "INSERT INTO ga_areas (layout_id, name, capacity) VALUES (%s, 'Floor', %s) RETURNING id",
            (layout, GA),
        ).fetchone()[0]  # type: ignore[index]
        event = conn.execute(
            "INSERT INTO events (slug, title, performer, category, venue_id, layout_id, city, timezone,"
            " starts_at, ends_at, onsale_starts_at, onsale_ends_at, status) VALUES ('bench-seatmap',"
            " 'Bench', 'Bench', 'music', %s, %s, 'Benchton', 'UTC', now() + interval '30 days',"
            " now() + interval '31 days', now() - interval '1 day', now() + interval '30 days', 'on_sale')"
            " RETURNING id",
            (venue, layout),
        ).fetchone()[0]  # type: ignore[index]
        # Three seated price bands by section, and the floor.
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
        # A realistic mid-sale map: a fifth of the seats sold or blocked.
        conn.execute(
            "UPDATE inventory_units SET state = 'blocked' WHERE event_id = %s AND seat_id IS NOT NULL"
            " AND random() < 0.2",
            (event,),
        )
        conn.commit()
        conn.execute("ANALYZE")
        return str(event)


def free_port() -> int:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api(database: str, redis: str, data: Path, workers: int) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "BOXOFFICE_DATABASE_URL": database,
        "BOXOFFICE_REDIS_URL": redis,
        "BOXOFFICE_DATA_DIR": str(data / "api"),
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
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
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
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Result:
    scenario: str
    clients: int
    requests: int
    seconds: float
    p50: float
    p95: float
    p99: float
    statuses: str
    bytes_per_response: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Connection:
    """A bare keep-alive HTTP/1.1 client for GETs: httpx costs more CPU per request than the
    endpoint does, and on a small machine the load generator would measure itself."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)
        }
        body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        return status, fields, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def hammer(
    base: str,
    path: str,
    scenario: str,
    clients: int,
    seconds: float,
    *,
    conditional: bool = False,
    once: bool = False,
) -> Result:
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sizes: list[int] = []
    connections = [Connection(host, int(port)) for _ in range(clients)]
    etag = (await connections[0].get(path, {}))[1]["etag"] if conditional else None
    stop = time.perf_counter() + seconds

    async def client(conn: Connection) -> None:
        headers = {"Accept-Encoding": "gzip"}
        if etag:
            headers["If-None-Match"] = etag
        while True:
            started = time.perf_counter()
            status, _, body = await conn.get(path, headers)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            sizes.append(len(body))
            if once or time.perf_counter() >= stop:
                return

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(conn) for conn in connections))
    finally:
        for conn in connections:
            await conn.close()
    elapsed = time.perf_counter() - started
    return Result(
        scenario=scenario,
        clients=clients,
        requests=len(latencies),
        seconds=elapsed,
        p50=_pct(latencies, 0.50),
        p95=_pct(latencies, 0.95),
        p99=_pct(latencies, 0.99),
        statuses=", ".join(f"{code}x{count}" for code, count in sorted(statuses.items())),
        bytes_per_response=int(statistics.mean(sizes)),
    )


async def churn(database: str, redis_url: str, event_id: str, stop: asyncio.Event) -> int:
    """Flip a seat and bump the version ten times a second, as sales and the relay would."""
    redis = Redis.from_url(redis_url)
    changes = 0
    async with await psycopg.AsyncConnection.connect(_plain(database), autocommit=True) as conn:
        seats = [
            row[0]
            for row in await (
                await conn.execute(
                    "SELECT id FROM inventory_units WHERE event_id = %s AND seat_id IS NOT NULL", (event_id,)
                )
            ).fetchall()
        ]
        while not stop.is_set():
            unit = random.choice(seats)
            await conn.execute(
                "UPDATE inventory_units SET state = CASE state WHEN 'blocked' THEN 'available' ELSE 'blocked' END"
                " WHERE id = %s AND state IN ('available', 'blocked')",
                (unit,),
            )
            redis.incr(version_key(event_id))
            changes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    redis.close()
    return changes


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


async def run(
    base: str, database: str, redis_url: str, event_id: str, seconds: float, counts: list[int]
) -> list[Result]:
    path = f"/events/{event_id}/seatmap"
    results: list[Result] = []
    redis = Redis.from_url(redis_url)
    prefix = f"boxoffice:event:{{{event_id}}}:seatmap"
    for clients in counts:
        redis.delete(
            f"{prefix}:meta", f"{prefix}:json", f"{prefix}:gzip", f"{prefix}:layout", f"{prefix}:lock"
        )
        results.append(await hammer(base, path, "cold (all at once)", clients, seconds, once=True))
        results.append(await hammer(base, path, "cached", clients, seconds))
        results.append(await hammer(base, path, "revalidate (304)", clients, seconds, conditional=True))
        stop = asyncio.Event()
        writer = asyncio.create_task(churn(database, redis_url, event_id, stop))
        try:
            result = await hammer(base, path, "churn (10 changes/s)", clients, seconds)
        finally:
            stop.set()
            changes = await writer
        results.append(result)
        print(f"  churn: {changes} changes", flush=True)
        for r in results[-4:]:
            print(
                f"{r.scenario:22} {r.clients:4} clients: {r.rate:7.0f} req/s  p50 {r.p50:6.1f} ms"
                f"  p95 {r.p95:6.1f} ms  p99 {r.p99:6.1f} ms  [{r.statuses}]  {r.bytes_per_response} B",
                flush=True,
            )
    redis.close()
    return results


def main(seconds: float, counts: list[int], workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-seatmap-") as tmp:
        data = Path(tmp)
        with servers(data) as (database, redis_url, kind):
            migrations.upgrade(database)
            event_id = build_stadium(database)
            with psycopg.connect(_plain(database)) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                seats = conn.execute(
                    "SELECT count(*) FROM inventory_units WHERE event_id = %s AND seat_id IS NOT NULL",
                    (event_id,),
                ).fetchone()[0]  # type: ignore[index]
            with api(database, redis_url, data, workers) as base:
                plain = httpx.get(
                    f"{base}/events/{event_id}/seatmap", headers={"Accept-Encoding": "identity"}
                )
                raw_size = len(plain.content)
                results = asyncio.run(run(base, database, redis_url, event_id, seconds, counts))
    REPORTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    lines = [
        f"# Seat map latency ({stamp} UTC)",
        "",
        f"Machine: {_machine()}. PostgreSQL {version} ({kind}), Valkey/Redis on loopback; API: uvicorn,"
        f" {workers} worker(s), on the same machine as the load generator. Event: {seats} seats"
        f" ({SECTIONS} sections x {ROWS} rows x {PER_ROW}) and a {GA}-place GA floor; map body"
        f" {raw_size / 1e6:.1f} MB as JSON. {seconds:.0f} s per row; clients accept gzip.",
        "",
        "| scenario | clients | req/s | p50 ms | p95 ms | p99 ms | statuses | bytes/response |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
        *[
            f"| {r.scenario} | {r.clients} | {r.rate:.0f} | {r.p50:.1f} | {r.p95:.1f} | {r.p99:.1f}"
            f" | {r.statuses} | {r.bytes_per_response} |"
            for r in results
        ],
        "",
        "cold: snapshot and layout deleted, every client asks once at the same moment (one rebuild"
        " from PostgreSQL, the others wait for it). cached: full map from the Redis snapshot."
        " revalidate: If-None-Match with the current ETag, answered 304 from the version and meta keys."
        " churn: a seat changes and the version is bumped every 100 ms, so snapshots are rebuilt"
        " (at most one per event per 0.5 s) while the readers are served the previous one. The load"
        " generator is a bare asyncio HTTP/1.1 client, one keep-alive connection per client.",
    ]
    path = REPORTS / f"seatmap-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"report: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    main(args.seconds, [int(c) for c in args.clients.split(",")], args.workers)
