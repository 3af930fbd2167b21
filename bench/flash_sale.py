"""Flash sale: many fans buy one event at once through the HTTP API, until it sells out.

    python bench/flash_sale.py [--fans 200] [--mode ga|seats|mixed] [--quantity 2|random]
        [--ga 10000] [--seats 5000] [--readers 0] [--api-workers 2] [--worker-daemons 1]
        [--server uvicorn|granian] [--rate R --duration 30] [--max-seconds 180]
        [--waiting-room FANS_PER_MINUTE [--join-seconds 5]]
        [--api-url URL --database-url URL] [--profile] [--note TEXT] [--no-record]

The other benches time one statement or one endpoint. An on-sale is different: every fan
signs in, looks at the listing, holds, pays and retries at the same moment, and what matters
is how many tickets a second the whole system sells, what each order costs every process
(API, worker daemon, PostgreSQL, Valkey), and that nothing was sold twice or promised and
lost. So this bench drives the public API only, the way browsers would, and then checks the
database.

Servers are embedded (PostgreSQL started with pg_stat_statements and room for 300
connections) unless BOXOFFICE_TEST_DATABASE_URL / BOXOFFICE_TEST_REDIS_URL are set; on a
configured PostgreSQL a fresh database ``bench_flash_<pid>`` is created and dropped after. A
configured Redis should be one nothing else works on: the worker daemons drain its queues.
With ``--api-url`` and ``--database-url`` a running stack is used as it is: the bench only
adds the event and the fans, and finds the processes to measure by port and name.

Fans are created in SQL (one Argon2 hash shared by all, a session token each); one fan
signs in over HTTP to show that path works. After a barrier each fan loops: GA fans hold
``--quantity`` places of the floor tier, seat fans read the seat map and hold adjacent free
seats in a row; both then check out with the offline provider's test card. 503s are
honoured by their Retry-After; a checkout without an answer is asked again, for the same
hold, until it answers; a hold the fan gives up on is released. With ``--rate`` the fans are
replaced by an open loop: a new order every 1/R seconds whatever the answers, for
``--duration`` seconds, which gives latency at a known load.

With ``--waiting-room`` the event's waiting room is on, admitting that many fans a minute:
every fan joins the queue in the ``--join-seconds`` before the sale opens (so all are drawn
at random), checks its place as the API tells it to (at most once a second), and buys only
once admitted, sending its admission token with every hold and checkout. The report adds
the admission rate the database recorded against the setting, the wait in the queue, and
tickets a second from the opening.

CPU is summed per process group (with reaped children, so rq's forked work horses count)
from the start until the worker has caught up, and also for a few seconds before the start
with nobody buying: the worker's ticker and relay cost CPU whether or not anyone buys, and
at low order counts that idle cost would otherwise read as a cost per order.

Prints a table, writes bench/reports/flash-sale-<time>.json with everything (settings,
machine, latencies, errors, CPU per process group, database work per order, the audit), and
appends a row to bench/RESULTS.md unless ``--no-record``. Exits 1 when the audit fails, 2
when aiohttp (the bench extra) or the chosen server is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import hashlib
import http.client
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg
from argon2 import PasswordHasher
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import StartedJobRegistry
from sqlalchemy.engine import make_url

from booking import migrations
from console.stack import EmbeddedPostgres, EmbeddedValkey

try:
    import aiohttp
except ImportError:  # pragma: no cover - the bench extra is optional
    aiohttp = None  # type: ignore[assignment]

# Phases are timed from here, so the report shows where a run's minutes went.
LAUNCHED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
REPORTS = Path(__file__).parent / "reports"
RESULTS = Path(__file__).parent / "RESULTS.md"

ROWS_PER_SECTION, SEATS_PER_ROW = 20, 25
# The stack's highest allowed per-fan cap: the cap must not be what ends the sale.
FAN_CAP = 100
# Every fan here is one loopback address, and buys order after order up to FAN_CAP: the
# per-address limits are off and the per-fan ones far above what a fan sends, so nobody is
# refused, while the limits' Redis round trips stay in the CPU measured per order.
RATE_LIMITS = {
    **{
        f"BOXOFFICE_RATE_LIMIT_{kind}_PER_ADDRESS": "off"
        for kind in ("SIGNUP", "LOGIN", "HOLD", "RENEW", "CHECKOUT", "QUEUE")
    },
    **{
        f"BOXOFFICE_RATE_LIMIT_{kind}_PER_FAN": "100000/minute"
        for kind in ("HOLD", "RENEW", "CHECKOUT", "QUEUE")
    },
    "BOXOFFICE_RATE_LIMIT_LOGIN_PER_ACCOUNT": "100000/minute",
    "BOXOFFICE_LOGIN_BACKOFF_ADDRESS_FAILURES": "0",
}
PASSWORD = "flash-sale-bench-password"  # noqa: S105 (only the bench's own fan accounts have it)
CARD = "4242424242424242"
# Marks the bench's own statements so they can be left out of the per-order counts.
TAG = "/* flash-sale-bench */ "
# A connection the server closes while idle must not be the one the client reuses: uvicorn
# drops idle keep-alive connections after 5 s.
KEEPALIVE_SECONDS = 4.0
HOLD_ATTEMPTS = 6
CHECKOUT_ATTEMPTS = 12
MAX_PAUSE = 10.0
# After the sale deadline, how long answers to requests already sent are still waited for,
# and then how long settling the holds left open may take.
GRACE_SECONDS = 10.0
FINISH_SECONDS = 10.0


class BenchError(Exception):
    """The bench cannot go on; the message says why."""


def _libpq(url: str) -> str:
    # psycopg takes libpq URLs, not SQLAlchemy's driver-qualified ones.
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Servers:
    database: str
    redis: str
    kind: str
    postmaster: int | None
    valkey: int | None


def _tune_embedded(url: str) -> bool:
    """Ask for pg_stat_statements and enough connections; True when a restart is needed.

    Room for 300 connections so that several API processes' pools (30 each) fit: the bench
    measures the application, not PostgreSQL's default connection limit."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        preload = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
        limit = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        offered = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
        ).fetchone()
        restart = False
        if offered and "pg_stat_statements" not in preload:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            # Plans counted as well as calls: a statement planned about as often as it runs
            # is not using its prepared plan.
            conn.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
            restart = True
        if limit < 300:
            conn.execute("ALTER SYSTEM SET max_connections = 300")
            restart = True
    return restart


def _restart_embedded(pg: EmbeddedPostgres) -> str:
    pg.stop()
    try:
        return pg.start()
    except Exception:
        # A build whose library will not load: start without it rather than not at all.
        auto = pg.pgdata / "postgresql.auto.conf"
        auto.write_text(
            "".join(line for line in auto.read_text().splitlines(True) if "shared_preload" not in line)
        )
        return pg.start()


def _fresh_database(url: str) -> tuple[str, Callable[[], None]]:
    """A new database on a configured server, and how to drop it."""
    name = f"bench_flash_{os.getpid()}"
    admin = _libpq(make_url(url).set(database="postgres").render_as_string(hide_password=False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


@contextlib.contextmanager
def servers(data: Path) -> Iterator[Servers]:
    stops: list[Callable[[], None]] = []
    try:
        configured = os.environ.get("BOXOFFICE_TEST_DATABASE_URL")
        postmaster = None
        if configured:
            database, drop = _fresh_database(configured)
            stops.append(drop)
            kind = "configured"
        else:
            pg = EmbeddedPostgres(data / "pg")
            database = pg.start()
            stops.append(pg.stop)
            if _tune_embedded(database):
                database = _restart_embedded(pg)
            postmaster, kind = pg.postmaster_pid, "embedded"
        redis = os.environ.get("BOXOFFICE_TEST_REDIS_URL")
        valkey_pid = None
        if not redis:
            valkey = EmbeddedValkey(data / "valkey")
            redis = valkey.start()
            stops.append(valkey.stop)
            valkey_pid = valkey.pid
        yield Servers(database, redis, kind, postmaster, valkey_pid)
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as error:  # the others must still be stopped
                print(f"warning: stopping a server failed: {error}", file=sys.stderr)


def enable_statements(database: str) -> bool:
    """Whether per-statement counts can be had: pg_stat_statements loaded and creatable here."""
    try:
        with psycopg.connect(_libpq(database), autocommit=True) as conn:
            preload = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
            if "pg_stat_statements" not in preload:
                return False
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            return True
    except psycopg.Error:
        return False


# --- the event and the fans ------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    ga_tier: str | None
    ga: int
    seats: int


def build_event(database: str, ga: int, seats: int, tag: str) -> Event:
    """An event on sale now: a GA floor of ``ga`` places and ``seats`` reserved seats in
    sections of 20 rows x 25, numbered 1..25 along each row so adjacency is visible."""
    per_section = ROWS_PER_SECTION * SEATS_PER_ROW
    with psycopg.connect(_libpq(database)) as conn:
        venue = conn.execute(
            "INSERT INTO venues (slug, name, city, country, latitude, longitude, timezone)"
            " VALUES (%s, 'Flash Arena', 'Benchton', 'GB', 51.5, 0, 'UTC') RETURNING id",
            (f"bench-flash-{tag}",),
        ).fetchone()[0]  # type: ignore[index]
        layout = conn.execute(
            "INSERT INTO seating_layouts (venue_id, name) VALUES (%s, 'Arena') RETURNING id", (venue,)
        ).fetchone()[0]  # type: ignore[index]
        event = conn.execute(
            "INSERT INTO events (slug, title, performer, category, venue_id, layout_id, city, timezone,"
            " starts_at, ends_at, onsale_starts_at, onsale_ends_at, status) VALUES (%s,"
            " 'Flash sale', 'The Bench', 'music', %s, %s, 'Benchton', 'UTC', now() + interval '30 days',"
            " now() + interval '31 days', now() - interval '1 minute', now() + interval '30 days',"
            " 'on_sale') RETURNING id",
            (f"bench-flash-{tag}", venue, layout),
        ).fetchone()[0]  # type: ignore[index]
        ga_tier = None
        if seats:
            conn.execute(
                "INSERT INTO sections (layout_id, name, sort_order)"
                " SELECT %s, 'Block ' || s, s FROM generate_series(1, %s) s",
                (layout, math.ceil(seats / per_section)),
            )
            conn.execute(
                "INSERT INTO seat_rows (section_id, label, sort_order)"
                " SELECT sec.id, 'R' || r, r FROM sections sec, generate_series(1, %s) r"
                " WHERE sec.layout_id = %s AND (sec.sort_order - 1) * %s + (r - 1) * %s < %s",
                (ROWS_PER_SECTION, layout, per_section, SEATS_PER_ROW, seats),
            )
            conn.execute(
                "INSERT INTO seats (row_id, number, x, y, accessible)"
                " SELECT sr.id, n::text, sec.sort_order * 300 + n * 10, sr.sort_order * 12, false"
                " FROM sections sec JOIN seat_rows sr ON sr.section_id = sec.id, generate_series(1, %s) n"
                " WHERE sec.layout_id = %s AND (sec.sort_order - 1) * %s + (sr.sort_order - 1) * %s + n <= %s",
                (SEATS_PER_ROW, layout, per_section, SEATS_PER_ROW, seats),
            )
            seat_tier = conn.execute(
                "INSERT INTO price_tiers (event_id, name, price_minor, currency, sort_order)"
                " VALUES (%s, 'Seated', 6500, 'GBP', 1) RETURNING id",
                (event,),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO inventory_units (event_id, price_tier_id, seat_id)"
                " SELECT %s, %s, seats.id FROM seats JOIN seat_rows sr ON sr.id = seats.row_id"
                " JOIN sections sec ON sec.id = sr.section_id WHERE sec.layout_id = %s",
                (event, seat_tier, layout),
            )
        if ga:
            area = conn.execute(
                "INSERT INTO ga_areas (layout_id, name, capacity) VALUES (%s, 'Floor', %s) RETURNING id",
                (layout, ga),
            ).fetchone()[0]  # type: ignore[index]
            ga_tier = conn.execute(
                "INSERT INTO price_tiers (event_id, name, price_minor, currency, ga_area_id, sort_order)"
                " VALUES (%s, 'Floor', 5500, 'GBP', %s, 2) RETURNING id",
                (event, area),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO inventory_units (event_id, price_tier_id, ga_area_id)"
                " SELECT %s, %s, %s FROM generate_series(1, %s)",
                (event, ga_tier, area, ga),
            )
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    return Event(str(event), str(ga_tier) if ga_tier else None, ga, seats)


@dataclass
class Fan:
    n: int
    email: str
    token: str
    kind: str = "ga"
    requests: int = 0
    tickets: int = 0
    etag: str | None = None
    # Seats this fan was just told are taken, until when: the map it reads may lag them.
    taken: dict[int, float] = field(default_factory=dict)
    # With a waiting room: the token of the fan's admission, once admitted.
    admission: str | None = None


# A hold or checkout refused because the fan's admission is over: this fan's shopping ends.
ADMISSION_OVER = frozenset({"admission-token-expired", "admission-revoked"})


def enable_room(database: str, event_id: str, per_minute: int) -> None:
    """The event's waiting room on, admitting ``per_minute`` fans a minute, opening an hour
    from now until ``set_room_opening`` says when (fans may join from the start)."""
    with psycopg.connect(_libpq(database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO waiting_rooms (event_id, enabled, rate_per_minute, sale_opens_at)"
            " VALUES (%s, true, %s, now() + interval '1 hour')",
            (event_id, per_minute),
        )


def set_room_opening(database: str, event_id: str, opens: dt.datetime) -> None:
    with psycopg.connect(_libpq(database), autocommit=True) as conn:
        conn.execute("UPDATE waiting_rooms SET sale_opens_at = %s WHERE event_id = %s", (opens, event_id))


def admitted(fan: Fan) -> dict[str, str]:
    return {"Admission-Token": fan.admission} if fan.admission else {}


def room_facts(database: str, event_id: str, sale: Sale) -> dict[str, Any] | None:
    """What the room did, from the database's record of admissions: how many, at what rate
    from the first to the last (against the setting), and the fans' waits as they saw them."""
    if not sale.args.waiting_room:
        return None
    with psycopg.connect(_libpq(database), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(admitted_at) - min(admitted_at)),"
            " extract(epoch FROM min(admitted_at) - (SELECT sale_opens_at FROM waiting_rooms WHERE event_id = %s))"
            " FROM waiting_room_admissions WHERE event_id = %s",
            (event_id, event_id),
        ).fetchone()
    admitted_count, spread, first_after_open = row if row is not None else (0, None, None)
    setting = sale.args.waiting_room
    measured = (admitted_count - 1) * 60 / float(spread) if admitted_count > 1 and spread else None
    selling = (sale.last_sale or sale.end) - sale.opened if sale.opened else None
    waits = sale.queue_waits
    return {
        "rate_setting_per_minute": setting,
        "admitted": admitted_count,
        "rate_measured_per_minute": round(measured, 1) if measured is not None else None,
        "rate_ratio": round(measured / setting, 3) if measured is not None else None,
        "first_admission_after_opening_s": round(float(first_after_open), 2)
        if first_after_open is not None
        else None,
        "queue_wait_p50_s": round((_pct(waits, 0.5) or 0) / 1000, 1) if waits else None,
        "queue_wait_p99_s": round((_pct(waits, 0.99) or 0) / 1000, 1) if waits else None,
        "tickets_per_s_since_opening": round(sale.tickets / selling, 1) if selling and selling > 0 else None,
    }


def make_fans(database: str, count: int, tag: str) -> list[Fan]:
    """Accounts and sessions straight in SQL: a thousand sign-ups through the API would spend
    minutes on Argon2 before the sale even starts, and the sale is what is measured."""
    password_hash = PasswordHasher().hash(PASSWORD)
    fans = [
        Fan(n, f"flash-{tag}-{n}@bench.example", "bofan_" + secrets.token_urlsafe(32)) for n in range(count)
    ]
    with psycopg.connect(_libpq(database)) as conn:
        ids = dict(
            conn.execute(
                "INSERT INTO fans (email, password_hash, display_name)"
                " SELECT e, %s, 'Bench fan' FROM unnest(%s::text[]) AS t(e) RETURNING email, id",
                (password_hash, [fan.email for fan in fans]),
            ).fetchall()
        )
        conn.execute(
            "INSERT INTO fan_sessions (fan_id, token_hash, expires_at)"
            " SELECT f, h, now() + interval '1 day' FROM unnest(%s::uuid[], %s::text[]) AS t(f, h)",
            (
                [ids[fan.email] for fan in fans],
                [hashlib.sha256(fan.token.encode()).hexdigest() for fan in fans],
            ),
        )
        conn.commit()
    return fans


# --- the stack -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Children get SIGTERM if the bench is killed outright, so no API outlives a kill -9.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Stack:
    """The API and the worker daemons, each in its own process group so that stopping one
    reaches what it forked (server workers, rq work horses, the ticker)."""

    def __init__(self, env: Mapping[str, str], logs: Path) -> None:
        self.env = dict(env)
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.children.append((name, process))
        return process

    def stop(self, timeout: float = 10.0) -> None:
        for _, process in self.children:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, process in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for _, process in self.children:
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.children.clear()


def free_port() -> int:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_argv(server: str, workers: int, port: int) -> list[str]:
    if server == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--workers", str(workers),
            "--host", "127.0.0.1", "--port", str(port), "--no-ws", "--log-level", "warning",
            "--no-access-log", "api.app:create_app",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def wait_healthy(base: str, process: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    parts = urlsplit(base)
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=2)
        try:
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if process is not None and process.poll() is not None:
            raise BenchError(f"the API exited with code {process.returncode} before answering /ready")
        if time.monotonic() > deadline:
            raise BenchError(f"the API at {base} did not answer /ready within {timeout:.0f} s")
        time.sleep(0.25)


# --- CPU and database counters ---------------------------------------------------------------


@dataclass
class Group:
    """Processes whose CPU time is added up: each root and everything below it.

    A process's time is counted while it lives (user + system), and once it has exited and
    been reaped it is in its parent's children_user/children_system, so both are summed for
    every member: a work horse that ran a job between two snapshots is counted once, by the
    rq worker that waited for it. ``own_only`` is for the bench itself, whose children are
    the stack under test."""

    name: str
    roots: list[int]
    own_only: bool = False
    # For processes that can only be found once the stack is busy (the Redis the API uses).
    find: Callable[[], list[int]] | None = None

    def seconds(self) -> float | None:
        if not self.roots and self.find is not None:
            self.roots = self.find()
        if not self.roots:
            return None
        total = 0.0
        for root in self.roots:
            try:
                top = psutil.Process(root)
                members = [top] if self.own_only else [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            for member in members:
                try:
                    times = member.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
                if not self.own_only:
                    total += times.children_user + times.children_system
        return total


TABLE_COUNTERS = (
    "seq_scan",
    "seq_tup_read",
    "idx_scan",
    "idx_tup_fetch",
    "n_tup_ins",
    "n_tup_upd",
    "n_tup_hot_upd",
)
DB_COUNTERS = (
    "xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched", "blks_hit",
    "blks_read",
)  # fmt: skip


class Meter:
    """CPU per group at the barrier, when the sale ends and once the worker has caught up;
    database counters at the barrier and at the end. The bench's own statements on its
    connection are counted so they can be taken out again."""

    def __init__(
        self, groups: list[Group], database: str, statements: bool, redis: str | None = None
    ) -> None:
        self.groups = groups
        self.statements = statements
        self.conn = psycopg.connect(_libpq(database), autocommit=True)
        self.redis = redis
        self.commands: dict[str, dict[str, int]] = {}
        self.own_queries = 0
        self.cpu: dict[str, dict[str, float | None]] = {}
        self.wall: dict[str, float] = {}
        self.db: dict[str, dict[str, int]] = {}
        self.tables: dict[str, dict[str, list[int]]] = {}

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.own_queries += 1
        return self.conn.execute(TAG + sql, params).fetchall()

    def mark(self, label: str) -> None:
        self.wall[label] = time.perf_counter()
        self.cpu[label] = {group.name: group.seconds() for group in self.groups}
        if label in ("start", "done"):
            row = self.query(
                f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database WHERE datname = current_database()"
            )[0]
            self.db[label] = dict(zip(DB_COUNTERS, (int(v or 0) for v in row), strict=True))
            self.commands[label] = self.valkey_commands()
            self.tables[label] = {
                name: [int(v or 0) for v in values]
                for name, *values in self.query(
                    f"SELECT relname, {', '.join(TABLE_COUNTERS)} FROM pg_stat_user_tables"
                )
            }
        if label == "start":
            self.own_queries = 0
            if self.statements:
                try:
                    self.query("SELECT pg_stat_statements_reset()")
                except psycopg.Error:
                    self.statements = False

    def valkey_commands(self) -> dict[str, int]:
        """Calls per command so far (``INFO commandstats``); empty when it cannot be asked.
        Every command is a round trip for some process (scripts count as one), so the delta
        per order is the buying path's Redis cost; the bench's own INFO calls are left out."""
        if self.redis is None:
            return {}
        try:
            client = Redis.from_url(self.redis, socket_timeout=5)
            try:
                stats = client.info("commandstats")
            finally:
                client.close()
        except (RedisError, OSError):
            return {}
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if isinstance(value, dict) and name != "cmdstat_info"
        }

    def command_delta(self, orders: int) -> dict[str, float]:
        """Valkey commands per order between the barrier and the end, most frequent first."""
        before, after = self.commands.get("start", {}), self.commands.get("done", {})
        if not orders or not after:
            return {}
        delta = {name: (calls - before.get(name, 0)) / orders for name, calls in after.items()}
        ranked = sorted(((n, round(d, 2)) for n, d in delta.items() if d >= 0.005), key=lambda i: -i[1])
        return dict([("all", round(sum(delta.values()), 2)), *ranked])

    def cpu_delta(self, until: str, since: str = "start") -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, before in self.cpu[since].items():
            after = self.cpu[until].get(name)
            out[name] = None if before is None or after is None else round(after - before, 3)
        return out

    def idle_rate(self) -> dict[str, float | None]:
        """CPU seconds per second each group spent before the barrier, with nobody buying."""
        seconds = self.wall["start"] - self.wall["idle"]
        return {
            name: None if v is None or seconds <= 0 else round(v / seconds, 3)
            for name, v in self.cpu_delta("start", "idle").items()
        }

    def table_delta(self, orders: int) -> dict[str, dict[str, float]]:
        """Per table, what the sale did to it per order: a sequential scan on the buying path
        (a plan made while the table was small) shows here first."""
        out: dict[str, dict[str, float]] = {}
        for name, after in self.tables["done"].items():
            before = self.tables["start"].get(name, [0] * len(TABLE_COUNTERS))
            delta = [a - b for a, b in zip(after, before, strict=True)]
            if orders and any(delta):
                out[name] = {k: round(d / orders, 2) for k, d in zip(TABLE_COUNTERS, delta, strict=True)}
        return dict(sorted(out.items(), key=lambda item: -item[1]["seq_tup_read"]))

    def db_delta(self) -> dict[str, int]:
        delta = {k: self.db["done"][k] - self.db["start"][k] for k in DB_COUNTERS}
        # Every bench query is its own autocommit transaction.
        delta["xact_commit"] -= self.own_queries
        return delta

    def statement_counts(self) -> dict[str, Any] | None:
        if not self.statements:
            return None
        rows = self.query(
            "SELECT calls, total_exec_time, rows, query, shared_blks_hit + shared_blks_read, plans,"
            " total_plan_time FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query NOT LIKE %s ORDER BY calls DESC",
            ("%flash-sale-bench%",),
        )
        utility = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|SET|SHOW|DISCARD)\b", re.I)
        return {
            "calls": sum(int(r[0]) for r in rows),
            "calls_without_utility": sum(int(r[0]) for r in rows if not utility.match(r[3])),
            "top": [
                {
                    "calls": int(r[0]),
                    "total_ms": round(float(r[1]), 1),
                    "rows": int(r[2]),
                    "blocks": int(r[4]),
                    # Counted only with pg_stat_statements.track_planning on: a statement
                    # planned about as often as it runs is not using a cached plan.
                    "plans": int(r[5]),
                    "plan_ms": round(float(r[6]), 1),
                    "query": r[3][:300],
                }
                for r in rows[:20]
            ],
        }

    def close(self) -> None:
        self.conn.close()


# --- the client ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (refused, reset, timed out)
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def problem(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("type"), str):
            return str(self.body["type"]).rstrip("/").rsplit("/", 1)[-1]
        return ""

    def retry_after(self) -> float | None:
        value = self.headers.get("Retry-After")
        if value is not None:
            with contextlib.suppress(ValueError):
                return max(float(value), 0.0)
        if isinstance(self.body, dict):
            with contextlib.suppress(TypeError, ValueError):
                return max(float(self.body.get("retry_after")), 0.0)  # type: ignore[arg-type]
        return None


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[tuple[str, int]] = Counter()
        self.problems: Counter[tuple[str, int, str]] = Counter()
        self.transport: Counter[tuple[str, str]] = Counter()
        self.unavailable: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[str] = Counter()


class Client:
    """One aiohttp session for every fan and reader: the load generator must cost little
    next to what it loads, on the same machine."""

    def __init__(self, session: aiohttp.ClientSession, base: str, recorder: Recorder) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.rec = recorder

    async def call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        fan: Fan | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Answer:
        sent = dict(headers or {})
        if fan is not None:
            sent["Authorization"] = f"Bearer {fan.token}"
            fan.requests += 1
        started = time.perf_counter()
        try:
            async with self.session.request(method, self.base + path, json=json_body, headers=sent) as resp:
                data = await resp.read()
                status, got = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as error:
            self.rec.transport[(endpoint, type(error).__name__)] += 1
            return Answer(0, error=type(error).__name__)
        # A 304 costs the server far less than a full body: timed apart.
        self.rec.latency[endpoint + (" (304)" if status == 304 else "")].append(time.perf_counter() - started)
        self.rec.status[(endpoint, status)] += 1
        body: Any = data
        if not raw or status >= 400:
            try:
                body = json.loads(data) if data else None
            except ValueError:
                body = None
        answer = Answer(status, body, got)
        if status >= 400:
            self.rec.problems[(endpoint, status, answer.problem or "-")] += 1
        if status == 503:
            self.rec.unavailable[(endpoint, "with" if "Retry-After" in got else "without")] += 1
        return answer


async def pause(answer: Answer, attempt: int) -> None:
    """Back off: as long as a 503 asks (capped, with jitter so fans do not return in step),
    else briefly and growing."""
    if answer.status == 503:
        delay = answer.retry_after()
        delay = 1.0 if delay is None else delay
    else:
        delay = min(0.1 * 2**attempt, 2.0)
    await asyncio.sleep(min(delay, MAX_PAUSE) * random.uniform(1.0, 1.2))


class SeatView:
    """A seat map reduced to runs of adjacent free seats, built once per ETag: every fan
    fetches the map (that load is real), but parsing the same body a thousand times would
    only measure the client."""

    def __init__(self, body: dict[str, Any]) -> None:
        runs: list[list[int]] = []
        available = 0
        for section in body.get("sections", []):
            for row in section.get("rows", []):
                run: list[int] = []
                last = None
                for seat in sorted(row.get("seats", []), key=lambda s: int(s["number"])):
                    number = int(seat["number"])
                    if seat["state"] == "available":
                        available += 1
                        if not run or last != number - 1:
                            if run:
                                runs.append(run)
                            run = []
                        run.append(int(seat["id"]))
                    elif run:
                        runs.append(run)
                        run = []
                    last = number
                if run:
                    runs.append(run)
        self.runs = runs
        self.available = available
        self._fits: dict[int, list[list[int]]] = {}

    def pick(self, quantity: int, taken: dict[int, float], now: float) -> list[int]:
        """``quantity`` adjacent seats at random; when no such block is left, the longest
        free stretch (fewer seats), so the last singles of a row still sell."""
        fits = self._fits.get(quantity)
        if fits is None:
            fits = self._fits[quantity] = [run for run in self.runs if len(run) >= quantity]
        for _ in range(12):
            if not fits:
                break
            run = random.choice(fits)
            start = random.randrange(len(run) - quantity + 1)
            window = run[start : start + quantity]
            if all(taken.get(seat, 0.0) <= now for seat in window):
                return window
        best: list[int] = []
        for run in random.sample(self.runs, len(self.runs)):
            stretch: list[int] = []
            for seat in run:
                if taken.get(seat, 0.0) > now:
                    best = max(best, stretch, key=len)
                    stretch = []
                else:
                    stretch.append(seat)
            best = max(best, stretch, key=len)
            if len(best) >= quantity:
                break
        return best[:quantity]


@dataclass
class HoldRecord:
    id: str
    fan: Fan
    kind: str
    quantity: int
    state: str = "held"  # held, confirmed, pending, failed, refund_required, released, unanswered


class Sale:
    """The fans' shared view of the sale: who holds what, and when a kind is sold out.

    A kind is sold out for a fan when the server says so and none of the bench's holds is
    still open: until then a hold could fail and give its places back."""

    def __init__(
        self, args: argparse.Namespace, event: Event, fans: list[Fan], client: Client, database: str
    ) -> None:
        self.args = args
        self.event = event
        self.database = database
        # With a waiting room: when it opened (perf_counter), and each admitted fan's wait
        # from joining to seeing its admission.
        self.opened = 0.0
        self.queue_waits: list[float] = []
        self.fans = fans
        self.client = client
        self.rec = client.rec
        self.start = 0.0
        self.deadline = 0.0
        self.hard_deadline = 0.0
        # No request is retried after this.
        self.cutoff = 0.0
        self.unsettled = 0
        # Per kind: only a GA hold can give GA places back, only a seat hold seats.
        self.open_holds: Counter[str] = Counter()
        self.last_release: Counter[str] = Counter()
        self.holds: dict[str, HoldRecord] = {}
        self.sold_out: dict[str, bool] = {"ga": False, "seats": False}
        self.orders = 0
        self.tickets = 0
        self.last_sale: float | None = None
        self.end = 0.0
        self.order_latency: list[float] = []
        self.fan_endings: Counter[str] = Counter()
        self.order_outcomes: Counter[str] = Counter()
        self.unknown_holds = 0
        self.views: dict[str, SeatView] = {}
        self.launch_lag: list[float] = []
        self.skipped = 0
        self.launched = 0
        self.signin_ok = False
        self.signin_error = ""

    def now(self) -> float:
        return time.perf_counter()

    def quantity(self) -> int:
        return random.randint(1, 4) if self.args.quantity == "random" else int(self.args.quantity)

    # --- requests with their retry rules ---

    async def create_hold(self, fan: Fan, body: dict[str, Any]) -> Answer:
        """One hold, retried under the same Idempotency-Key while there is no answer: a retry
        then returns the hold a lost answer carried, instead of leaving it held for nobody."""
        key = str(uuid.uuid4())
        answer = Answer(0)
        for attempt in range(HOLD_ATTEMPTS):
            answer = await self.client.call(
                "hold",
                "POST",
                "/holds",
                fan=fan,
                json_body=body,
                headers={"Idempotency-Key": key, **admitted(fan)},
            )
            busy = answer.status == 409 and answer.problem == "idempotency-key-in-progress"
            if answer.status not in (0, 503) and not busy:
                return answer
            if self.now() > self.cutoff:
                break
            self.rec.retries["hold"] += 1
            await pause(answer, attempt)
        if answer.status == 0:
            self.unknown_holds += 1
        return answer

    async def pay(self, fan: Fan, hold_id: str, attempts: int = CHECKOUT_ATTEMPTS) -> Answer:
        """Checkout is idempotent by hold: without an answer (or with a 5xx) the same hold is
        asked again until it says how the payment ended."""
        answer = Answer(0)
        body = {"provider": "offline", "card_number": CARD}
        for attempt in range(attempts):
            answer = await self.client.call(
                "checkout",
                "POST",
                f"/holds/{hold_id}/checkout",
                fan=fan,
                json_body=body,
                headers=admitted(fan),
            )
            if answer.status != 0 and answer.status < 500:
                return answer
            if self.now() > self.cutoff:
                break
            self.rec.retries["checkout"] += 1
            await pause(answer, attempt)
        return answer

    async def release(self, record: HoldRecord) -> None:
        key = str(uuid.uuid4())
        for attempt in range(3):
            answer = await self.client.call(
                "release", "DELETE", f"/holds/{record.id}", fan=record.fan, headers={"Idempotency-Key": key}
            )
            if answer.status == 200 or answer.problem == "hold-already-ended":
                record.state = "released"
                self.last_release[record.kind] = self.now()
                return
            if answer.status != 0 and answer.status < 500:
                return
            await pause(answer, attempt)

    async def listing(self, fan: Fan | None = None) -> Answer:
        return await self.client.call("listing", "GET", "/events", fan=fan)

    async def seat_map(self, fan: Fan) -> SeatView | None:
        headers = {"If-None-Match": fan.etag} if fan.etag and fan.etag in self.views else {}
        answer = await self.client.call(
            "seatmap", "GET", f"/events/{self.event.id}/seatmap", fan=fan, headers=headers, raw=True
        )
        if answer.status == 304 and fan.etag in self.views:
            return self.views[fan.etag]  # type: ignore[index]
        if answer.status == 200:
            etag = answer.headers.get("ETag")
            view = self.views.get(etag) if etag else None
            if view is None:
                view = SeatView(json.loads(answer.body))
                if etag:
                    if len(self.views) > 16:
                        self.views.pop(next(iter(self.views)))
                    self.views[etag] = view
            fan.etag = etag
            return view
        await pause(answer, 1)
        return None

    # --- one purchase ---

    async def sold_out_now(self, kind: str) -> str:
        if self.open_holds[kind] == 0 and self.now() - self.last_release[kind] > 2.0:
            self.sold_out[kind] = True
            return "sold-out"
        await asyncio.sleep(random.uniform(0.4, 0.6))
        return "retry"

    async def checkout(self, fan: Fan, kind: str, hold: dict[str, Any], started: float) -> str:
        record = HoldRecord(str(hold["id"]), fan, kind, int(hold["quantity"]))
        self.holds[record.id] = record
        self.open_holds[kind] += 1
        try:
            answer = await self.pay(fan, record.id)
            status = (
                answer.body.get("status") if answer.status == 200 and isinstance(answer.body, dict) else None
            )
            if status == "confirmed":
                record.state = "confirmed"
                fan.tickets += record.quantity
                self.tickets += record.quantity
                self.orders += 1
                self.last_sale = self.now()
                self.order_latency.append(self.last_sale - started)
                return "confirmed"
            if status in ("pending", "refund_required"):
                # Pending: the payment's own timers decide; the audit allows a live hold that
                # waits on a pending payment. Refund: the money goes back, no seats.
                record.state = str(status)
                return str(status)
            record.state = "unanswered" if answer.status == 0 or answer.status >= 500 else "failed"
            await self.release(record)
            return "checkout-failed"
        finally:
            self.open_holds[kind] -= 1

    async def attempt(self, fan: Fan, kind: str, quantity: int) -> str:
        """One try at buying: confirmed, sold-out, cap, or a word for why to try again."""
        started = self.now()
        if kind == "ga":
            body: dict[str, Any] = {"event_id": self.event.id, "tier_id": self.event.ga_tier}
            for _ in range(3):
                answer = await self.create_hold(fan, {**body, "quantity": quantity})
                if answer.problem != "not-enough-left":
                    break
                remaining = answer.body.get("remaining") if isinstance(answer.body, dict) else None
                if not isinstance(remaining, int) or remaining <= 0:
                    break
                quantity = remaining
        else:
            view = await self.seat_map(fan)
            if view is None:
                return "error"
            now = self.now()
            if len(fan.taken) > 500:
                fan.taken = {seat: until for seat, until in fan.taken.items() if until > now}
            seats = view.pick(quantity, fan.taken, now)
            if not seats:
                if view.available == 0:
                    return await self.sold_out_now("seats")
                # Everything the map offers was just taken: the map lags; read it again soon.
                await asyncio.sleep(random.uniform(0.2, 0.4))
                return "stale-map"
            answer = await self.create_hold(fan, {"event_id": self.event.id, "seat_ids": seats})
            if answer.problem == "seats-taken":
                gone = answer.body.get("seat_ids") if isinstance(answer.body, dict) else None
                for seat in gone if isinstance(gone, list) and gone else seats:
                    fan.taken[int(seat)] = now + 5.0
                return "seats-taken"
        if answer.status == 201 and isinstance(answer.body, dict):
            return await self.checkout(fan, kind, answer.body, started)
        if answer.problem in ("sold-out", "not-enough-left"):
            return await self.sold_out_now(kind)
        if answer.problem == "ticket-cap-reached":
            return "cap"
        if answer.problem in ADMISSION_OVER:
            return "window-ended"
        await pause(answer, 1)
        return "error"

    # --- the waiting room ---

    async def wait_in_room(self, fan: Fan) -> str | None:
        """Join the queue and check the place until admitted (None: go and buy) or until the
        sale's time is up or the place is lost (a word for why this fan stops)."""
        path = f"/events/{self.event.id}/queue"
        joined = self.now()
        answer = await self.client.call("queue join", "POST", path, fan=fan)
        # Until the room has the fan (a join refused by the in-flight bound, or a place lost),
        # the next call is a join.
        joining = answer.status != 200
        while True:
            body = answer.body if isinstance(answer.body, dict) else {}
            admission = body.get("admission") or {}
            if answer.status == 200 and body.get("state") == "admitted" and admission.get("token"):
                fan.admission = str(admission["token"])
                seen = self.now()
                self.queue_waits.append(seen - joined)
                return None
            if answer.status == 200 and body.get("state") in ("ended", "left"):
                return "place-lost"
            if answer.status == 404 and answer.problem == "queue-place-not-found":
                joining = True
            if self.now() > self.deadline:
                return "not-admitted"
            # As a careful client would: before the opening, at the opening (places are drawn
            # then); after it, as often as the API asks but sooner when the wait is short, so
            # the wait measured is the room's and not the polling's.
            every = float(body.get("check_every_seconds") or 1)
            wait = body.get("estimated_wait_seconds")
            if isinstance(wait, int | float):
                every = min(every, max(wait / 2, 1.0))
            opens = body.get("sale_opens_at")
            if body.get("state") == "waiting" and isinstance(opens, str):
                until_open = (dt.datetime.fromisoformat(opens) - dt.datetime.now(dt.UTC)).total_seconds()
                every = min(every, max(until_open, 0) + random.uniform(0.1, 1.0))
            if answer.status != 200:
                await pause(answer, 1)
            else:
                await asyncio.sleep(every)
            if joining:
                answer = await self.client.call("queue join", "POST", path, fan=fan)
                joining = answer.status != 200
            else:
                answer = await self.client.call("queue me", "GET", f"{path}/me", fan=fan)

    # --- the two kinds of load ---

    async def fan_loop(self, fan: Fan, go: asyncio.Event) -> None:
        await go.wait()
        await self.listing(fan)
        if self.args.waiting_room:
            # Fans arrive over the minutes before an opening, not in one instant.
            await asyncio.sleep(random.uniform(0, self.args.join_seconds * 0.8))
            stopped = await self.wait_in_room(fan)
            if stopped is not None:
                self.fan_endings[stopped] += 1
                return
        iteration = 0
        while True:
            if self.now() > self.deadline:
                ending = "deadline"
                break
            if fan.requests >= self.args.fan_budget:
                ending = "budget"
                break
            iteration += 1
            if iteration % 10 == 0:
                await self.listing(fan)
            outcome = await self.attempt(fan, fan.kind, self.quantity())
            if outcome in ("sold-out", "cap", "window-ended"):
                ending = outcome
                break
        self.fan_endings[ending] += 1

    async def order(self, fan: Fan, kind: str) -> None:
        """An open-loop order: one purchase, retried only where a fan would (taken seats, a
        stale map, a sold-out answer while others' holds are still open)."""
        outcome = "error"
        for _ in range(5):
            if self.sold_out[kind] or self.now() > self.hard_deadline:
                break
            outcome = await self.attempt(fan, kind, self.quantity())
            if outcome not in ("seats-taken", "stale-map", "retry"):
                break
        self.order_outcomes[outcome] += 1

    async def open_loop(self) -> None:
        interval = 1.0 / self.args.rate
        inflight: set[asyncio.Task[Any]] = set()
        n = 0
        while True:
            at = self.start + n * interval
            if at - self.start >= self.args.duration:
                break
            kinds = [k for k in self.kinds() if not self.sold_out[k]]
            if not kinds:
                break
            delay = at - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.launch_lag.append(-delay)
            fan = self.fans[n % len(self.fans)]
            n += 1
            if len(inflight) >= self.args.max_inflight:
                self.skipped += 1
                continue
            kind = fan.kind if fan.kind in kinds else kinds[0]
            self.launched += 1
            if self.launched % 10 == 0:
                task = asyncio.create_task(self.listing(fan))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            task = asyncio.create_task(self.order(fan, kind))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=max(self.hard_deadline - self.now(), 0.1))
        late = list(inflight)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=2)

    def kinds(self) -> list[str]:
        return {"ga": ["ga"], "seats": ["seats"], "mixed": ["ga", "seats"]}[self.args.mode]

    async def reader(self, stop: asyncio.Event) -> None:
        """A browser on the event's pages: listing, detail, seat map (revalidated with its
        ETag, as a cached page with Cache-Control: no-cache is)."""
        etag: str | None = None
        pages = (
            ("listing", "/events"),
            ("detail", f"/events/{self.event.id}"),
            ("seatmap", f"/events/{self.event.id}/seatmap"),
        )
        while not stop.is_set() and self.now() < self.hard_deadline:
            for endpoint, path in pages:
                headers = {"If-None-Match": etag} if endpoint == "seatmap" and etag else None
                answer = await self.client.call(endpoint, "GET", path, headers=headers, raw=True)
                if endpoint == "seatmap" and answer.status == 200:
                    etag = answer.headers.get("ETag")
                if answer.status == 0 or answer.status >= 500:
                    await pause(answer, 1)
                if stop.is_set():
                    return

    async def sign_in(self) -> None:
        """One fan signs in over HTTP, so the token path the others skip is shown to work."""
        fan = self.fans[0]
        answer = await self.client.call(
            "signin", "POST", "/sessions", json_body={"email": fan.email, "password": PASSWORD}
        )
        token = answer.body.get("token") if isinstance(answer.body, dict) else None
        if answer.status in (200, 201) and isinstance(token, str):
            fan.token = token
            me = await self.client.call("me", "GET", "/me", fan=fan)
            self.signin_ok = me.status == 200
            self.signin_error = "" if self.signin_ok else f"GET /me answered {me.status}"
        else:
            self.signin_error = f"POST /sessions answered {answer.status or answer.error} {answer.problem}"
        fan.requests = 0

    async def warm_up(self) -> None:
        """The pages a sale opens on are warm in real life: build the seat-map snapshot and
        the connection pools before the clock starts."""
        for endpoint, path in (
            ("warmup", "/events"),
            ("warmup", f"/events/{self.event.id}"),
            ("warmup", f"/events/{self.event.id}/seatmap"),
        ):
            answer = await self.client.call(endpoint, "GET", path, raw=True)
            if answer.status != 200:
                raise BenchError(f"warm-up GET {path} answered {answer.status or answer.error}")

    async def settle(self, record: HoldRecord) -> None:
        # "held": its task was cut off mid-checkout, so the hold may be paying: ask, then release.
        answer = await self.pay(record.fan, record.id, attempts=3)
        status = answer.body.get("status") if answer.status == 200 and isinstance(answer.body, dict) else None
        if status == "confirmed":
            record.state = "confirmed"
            record.fan.tickets += record.quantity
            self.tickets += record.quantity
            self.orders += 1
        elif status in ("pending", "refund_required"):
            record.state = str(status)
        else:
            await self.release(record)

    async def finish_holds(self) -> None:
        """Holds left open when time ran out: a checkout still unanswered is asked again (the
        answer may be a sale the fan must be told about), an unpaid hold is released. Bounded:
        what is still unsettled at the end is counted, and the audit shows what it left."""
        self.cutoff = self.now() + FINISH_SECONDS
        open_ = [r for r in self.holds.values() if r.state in ("held", "unanswered")]
        if not open_:
            return
        tasks = [asyncio.create_task(self.settle(r)) for r in open_]
        _, late = await asyncio.wait(tasks, timeout=FINISH_SECONDS + 2)
        for task in late:
            task.cancel()
        self.unsettled = sum(1 for r in open_ if r.state in ("held", "unanswered"))

    async def open_room(self) -> None:
        """Fans join for ``--join-seconds``; then the sale opens: the room draws their places
        and starts admitting (the API's copy of the room's settings is at most a second old)."""
        opens = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.args.join_seconds)
        await asyncio.to_thread(set_room_opening, self.database, self.event.id, opens)
        await asyncio.sleep(max((opens - dt.datetime.now(dt.UTC)).total_seconds(), 0))
        self.opened = self.now()

    async def progress(self) -> None:
        """A line every 10 s: a slow or failing sale shows itself while it runs."""
        sent = 0
        while True:
            await asyncio.sleep(10)
            total = sum(self.rec.status.values()) + sum(self.rec.transport.values())
            fivexx = sum(n for (_, status), n in self.rec.status.items() if status >= 500)
            print(
                f"  {self.now() - self.start:5.0f} s: {self.tickets} tickets, {self.orders} orders,"
                f" {sum(self.open_holds.values())} holds open, {(total - sent) / 10:.0f} req/s, {fivexx} 5xx,"
                f" {sum(self.rec.transport.values())} without answer",
                flush=True,
            )
            sent = total

    async def run(self, mark: Callable[[str], None]) -> None:
        go = asyncio.Event()
        stop = asyncio.Event()
        await self.sign_in()
        await self.warm_up()
        # Let the backends report what the setup did before the counters are read, and take
        # the stack's idle CPU (the worker's ticker and relay run whether or not anyone buys).
        await asyncio.sleep(1.2)
        mark("idle")
        await asyncio.sleep(self.args.idle_seconds)
        fans = [] if self.args.rate else [asyncio.create_task(self.fan_loop(f, go)) for f in self.fans]
        await asyncio.sleep(0)
        mark("start")
        self.start = self.now()
        seconds = self.args.duration if self.args.rate else self.args.max_seconds
        self.deadline = self.start + seconds
        self.hard_deadline = self.cutoff = self.deadline + GRACE_SECONDS
        readers = [asyncio.create_task(self.reader(stop)) for _ in range(self.args.readers)]
        ticker = asyncio.create_task(self.progress())
        opener = asyncio.create_task(self.open_room()) if self.args.waiting_room else None
        go.set()
        try:
            if self.args.rate:
                await self.open_loop()
            else:
                done, late = await asyncio.wait(fans, timeout=self.hard_deadline - self.now())
                for task in late:
                    task.cancel()
                if late:
                    self.fan_endings["cut off"] += len(late)
                    await asyncio.wait(late, timeout=2)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            self.end = self.now()
            stop.set()
            ticker.cancel()
            if opener is not None:
                opener.cancel()
            if readers:
                await asyncio.wait(readers, timeout=5)
                for task in readers:
                    task.cancel()
        await self.finish_holds()
        mark("sale")


async def drive(
    args: argparse.Namespace,
    base: str,
    event: Event,
    fans: list[Fan],
    mark: Callable[[str], None],
    database: str,
) -> tuple[Sale, Recorder]:
    recorder = Recorder()
    connections = (args.max_inflight if args.rate else len(fans)) + args.readers + 4
    connector = aiohttp.TCPConnector(
        limit=connections, limit_per_host=connections, keepalive_timeout=KEEPALIVE_SECONDS
    )
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Accept-Encoding": "gzip"}
    ) as session:
        sale = Sale(args, event, fans, Client(session, base, recorder), database)
        await sale.run(mark)
    return sale, recorder


# --- where the CPU goes ----------------------------------------------------------------------

# Our own packages: a stack's deepest frame in one of them is the code that asked for the work.
OWN_PACKAGES = ("api", "booking", "jobs", "daemon", "console")
PROFILE_RATE = 100  # samples per second per process; py-spy's default, cheap enough to leave on


class Profiler:
    """py-spy sampling the API and worker groups (their children included) from the barrier
    until the worker has caught up. Idle threads are not sampled, so samples are CPU time.

    The report keeps a summary per group: where samples end (by package and by function) and
    which of our functions they came from, so a missed target shows where its time went."""

    def __init__(self, groups: list[Group], folder: Path) -> None:
        self.groups = [g for g in groups if g.name in ("api", "worker") and g.roots]
        self.folder = folder
        self.running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def mark(self, label: str) -> None:
        if label == "start":
            self.start()
        elif label == "done":
            self.stop()

    def start(self) -> None:
        for group in self.groups:
            for root in group.roots:
                out = self.folder / f"{group.name}-{root}.txt"
                argv = [
                    "py-spy", "record", "--format", "raw", "--subprocesses", "--nonblocking",
                    "--rate", str(PROFILE_RATE), "--pid", str(root), "-o", str(out),
                ]  # fmt: skip
                process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.running.append((group.name, out, process))

    def stop(self) -> None:
        for _, _, process in self.running:
            process.send_signal(signal.SIGINT)
        for _, _, process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def summary(self, top: int = 15) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in sorted({name for name, _, _ in self.running}):
            stacks: Counter[tuple[str, ...]] = Counter()
            for group, path, _ in self.running:
                if group == name and path.exists():
                    for line in path.read_text(errors="replace").splitlines():
                        frames, _, count = line.rpartition(" ")
                        if frames and count.isdigit():
                            stacks[tuple(frames.split(";"))] += int(count)
            out[name] = summarize_stacks(stacks, top)
        return out


def _frame_parts(frame: str) -> tuple[str, str]:
    """(function, file) of a py-spy frame ``func (path/file.py:12)``."""
    function, _, where = frame.partition(" (")
    return function, where.rsplit(":", 1)[0]


def _package(path: str) -> str:
    head = path.split("/", 1)[0]
    return head.removesuffix(".py") if head else "?"


def summarize_stacks(stacks: Counter[tuple[str, ...]], top: int) -> dict[str, Any]:
    total = sum(stacks.values())
    by_package: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    by_own: Counter[str] = Counter()
    for frames, count in stacks.items():
        python = [f for f in frames if " (" in f and not f.startswith(("process ", "thread "))]
        if not python:
            continue
        function, path = _frame_parts(python[-1])
        by_package[_package(path)] += count
        by_leaf[f"{function} ({path})"] += count
        own = [f for f in python if _package(_frame_parts(f)[1]) in OWN_PACKAGES]
        if own:
            function, path = _frame_parts(own[-1])
            by_own[f"{function} ({path})"] += count
        else:
            by_own["(outside our code: server, event loop, rq)"] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[key, round(100 * n / total, 1)] for key, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "cpu_s": round(total / PROFILE_RATE, 1),
        "percent_by_package": share(by_package),
        "percent_by_function": share(by_leaf),
        "percent_by_our_caller": share(by_own),
    }


# --- after the sale --------------------------------------------------------------------------


def drain(meter: Meter, seconds: float, redis: str | None) -> tuple[int, float]:
    """Wait for the worker to catch up: the outbox empty, and the jobs it caused (the batched
    confirmation mail) done, so their CPU is counted too. Returns (outbox rows pending,
    seconds waited)."""
    started = time.monotonic()
    queue = Queue("default", connection=Redis.from_url(redis)) if redis else None
    while True:
        pending = int(meter.query("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")[0][0])
        busy = queue is not None and (queue.count > 0 or StartedJobRegistry(queue=queue).count > 0)
        waited = time.monotonic() - started
        if (pending == 0 and not busy) or waited >= seconds:
            return pending, round(waited, 1)
        time.sleep(0.5)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def audit(
    database: str, event: Event, sale: Sale, rec: Recorder, outbox_pending: int
) -> tuple[list[Check], dict[str, Any]]:
    """What the database says happened, against what the fans were told; and the one HTTP
    promise a client's retry loop depends on, that a 503 says when to come back."""
    e = {"e": event.id}
    checks: list[Check] = []
    facts: dict[str, Any] = {}
    with psycopg.connect(_libpq(database), autocommit=True) as conn:

        def one(sql: str) -> int:
            return int(conn.execute(sql, e).fetchone()[0])  # type: ignore[index]

        tiers = conn.execute(
            "SELECT t.name, count(u.id), count(u.id) FILTER (WHERE u.state = 'sold'), ga.capacity,"
            " (SELECT count(*) FROM order_items oi JOIN orders o ON o.id = oi.order_id"
            "   WHERE oi.price_tier_id = t.id AND oi.state = 'active' AND o.event_id = t.event_id)"
            " FROM price_tiers t LEFT JOIN inventory_units u ON u.price_tier_id = t.id AND u.event_id = t.event_id"
            " LEFT JOIN ga_areas ga ON ga.id = t.ga_area_id WHERE t.event_id = %(e)s"
            " GROUP BY t.id, t.name, ga.capacity ORDER BY t.name",
            e,
        ).fetchall()
        over = [
            f"{name}: {sold} sold, {items} sold items, {units} units, capacity {cap}"
            for name, units, sold, cap, items in tiers
            if sold > units or items > units or (cap is not None and items > cap) or items != sold
        ]
        facts["tiers"] = {
            name: {"units": units, "sold": sold, "capacity": cap} for name, units, sold, cap, _ in tiers
        }
        checks.append(
            Check(
                "sold units within capacity, per tier",
                not over,
                "; ".join(over)
                or ", ".join(f"{name} {sold}/{cap or units}" for name, units, sold, cap, _ in tiers),
            )
        )
        twice = one(
            "SELECT count(*) FROM (SELECT oi.unit_id FROM order_items oi JOIN orders o ON o.id = oi.order_id"
            " WHERE o.event_id = %(e)s AND oi.state = 'active' GROUP BY oi.unit_id HAVING count(*) > 1) d"
        )
        orphan_units = one(
            "SELECT count(*) FROM inventory_units u WHERE u.event_id = %(e)s AND u.state = 'sold'"
            " AND NOT EXISTS (SELECT 1 FROM order_items oi WHERE oi.unit_id = u.id"
            " AND oi.order_id = u.order_id AND oi.state = 'active')"
        )
        stray_items = one(
            "SELECT count(*) FROM order_items oi JOIN orders o ON o.id = oi.order_id"
            " LEFT JOIN inventory_units u ON u.id = oi.unit_id WHERE o.event_id = %(e)s AND oi.state = 'active'"
            " AND (u.state IS DISTINCT FROM 'sold' OR u.order_id IS DISTINCT FROM oi.order_id)"
        )
        checks.append(
            Check(
                "no unit sold twice (one order per sold unit)",
                twice == 0 and orphan_units == 0 and stray_items == 0,
                f"{twice} units in two orders, {orphan_units} sold units without their order's item,"
                f" {stray_items} items whose unit is not sold to their order",
            )
        )
        orders, empty, short, unticketed = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE items = 0), count(*) FILTER (WHERE items <> quantity),"
            " count(*) FILTER (WHERE tickets <> items) FROM (SELECT o.id, h.quantity,"
            " (SELECT count(*) FROM order_items oi WHERE oi.order_id = o.id AND oi.state = 'active') AS items,"
            " (SELECT count(*) FROM tickets t JOIN order_items oi ON oi.id = t.order_item_id"
            "   WHERE t.order_id = o.id AND t.state = 'valid' AND oi.state = 'active' AND t.unit_id = oi.unit_id)"
            "   AS tickets"
            " FROM orders o JOIN holds h ON h.id = o.hold_id WHERE o.event_id = %(e)s AND o.state = 'confirmed') x",
            e,
        ).fetchone()  # type: ignore[misc]
        checks.append(
            Check(
                "every confirmed order has its items and one ticket per unit",
                empty == 0 and short == 0 and unticketed == 0,
                f"{orders} orders: {empty} without items, {short} with fewer items than held,"
                f" {unticketed} whose tickets do not match their items",
            )
        )
        sold = one("SELECT count(*) FROM inventory_units WHERE event_id = %(e)s AND state = 'sold'")
        tickets = one("SELECT count(*) FROM tickets WHERE event_id = %(e)s AND state = 'valid'")
        facts.update(sold_units=sold, valid_tickets=tickets, confirmed_orders=orders)
        checks.append(
            Check(
                "tickets the fans were told of = units sold",
                sale.tickets == sold == tickets and sale.orders == orders,
                f"told {sale.tickets} tickets in {sale.orders} orders; database: {sold} units sold,"
                f" {tickets} valid tickets, {orders} orders"
                + (f"; {sale.unsettled} checkouts never answered" if sale.unsettled else ""),
            )
        )
        live = one(
            "SELECT count(*) FROM holds h WHERE h.event_id = %(e)s AND h.state IN ('active', 'paying', 'failed')"
            " AND h.expires_at > now() AND NOT EXISTS"
            " (SELECT 1 FROM payments p WHERE p.hold_id = h.id AND p.state = 'pending')"
        )
        held = one(
            "SELECT count(*) FROM inventory_units WHERE event_id = %(e)s AND state = 'held' AND held_until > now()"
        )
        facts.update(live_holds_without_payment=live, units_still_held=held)
        checks.append(
            Check(
                "no live hold left without a pending payment", live == 0, f"{live} holds, {held} units held"
            )
        )
        checks.append(Check("outbox drained", outbox_pending == 0, f"{outbox_pending} rows pending"))
        facts["payments"] = dict(
            conn.execute(
                "SELECT p.state, count(*) FROM payments p JOIN holds h ON h.id = p.hold_id"
                " WHERE h.event_id = %(e)s GROUP BY p.state",
                e,
            ).fetchall()
        )
        facts["holds"] = dict(
            conn.execute(
                "SELECT state, count(*) FROM holds WHERE event_id = %(e)s GROUP BY state", e
            ).fetchall()
        )
    checks.append(Check("sign-in over HTTP", sale.signin_ok, sale.signin_error or "POST /sessions, GET /me"))
    bare = {e: n for (e, w), n in rec.unavailable.items() if w == "without"}
    answered = sum(rec.unavailable.values())
    checks.append(
        Check(
            "every 503 carried Retry-After",
            not bare,
            f"{answered} 503s" + (f"; without the header: {bare}" if bare else ""),
        )
    )
    capacity = sum(v["units"] for v in facts["tiers"].values())
    facts["sold_out"] = sold >= capacity > 0
    facts["capacity_on_sale"] = capacity
    return checks, facts


def server_errors(logs: Path) -> dict[str, Any]:
    """The exception lines in the servers' logs, counted: a 500 says little on its own."""
    shape = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Timeout|Exit)\w*)(:.*)?$")
    out: dict[str, Any] = {}
    for log in sorted(logs.glob("*.log")):
        found: Counter[str] = Counter()
        lines = 0
        with log.open(errors="replace") as handle:
            for line in handle:
                lines += 1
                text = line.strip()
                if shape.match(text):
                    found[re.sub(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", "<uuid>", text)[:240]] += 1
        out[log.stem] = {"lines": lines, "exceptions": dict(found.most_common(12))}
    return out


# --- the report ------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(database: str, redis: str | None) -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(_libpq(database)) as conn:
        pg = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    valkey = None
    if redis:
        with contextlib.suppress(Exception):
            client = Redis.from_url(redis)
            info = client.info("server")
            valkey = info.get("valkey_version") or info.get("redis_version")
            client.close()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg,
        "valkey": valkey,
        "packages": {
            p: _version(p)
            for p in (
                "litestar",
                "uvicorn",
                "granian",
                "sqlalchemy",
                "psycopg",
                "rq",
                "redis",
                "aiohttp",
                "msgspec",
            )
        },
    }


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        # The results file itself changes with every recorded run: not a change to what ran.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def summarize(
    args: argparse.Namespace,
    sale: Sale,
    rec: Recorder,
    meter: Meter,
    checks: list[Check],
    facts: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    elapsed = sale.end - sale.start
    sold_out = bool(facts.get("sold_out"))
    sell_out = round(sale.last_sale - sale.start, 2) if sold_out and sale.last_sale else None
    selling = sell_out or elapsed
    latency = {
        name: {
            "count": len(values),
            "p50_ms": _pct(values, 0.50),
            "p95_ms": _pct(values, 0.95),
            "p99_ms": _pct(values, 0.99),
            "max_ms": _pct(values, 1.0),
        }
        for name, values in sorted({**rec.latency, "order (hold to confirmed)": sale.order_latency}.items())
    }
    cpu = meter.cpu_delta("done")
    idle = meter.idle_rate()
    measured = meter.wall["done"] - meter.wall["start"]
    orders, tickets = sale.orders, sale.tickets

    def per(value: float | None, count: int, scale: float = 1000) -> float | None:
        # Nothing sold: a cost "per order" would be the whole run's cost, not a unit cost.
        return None if value is None or count == 0 else round(value * scale / count, 2)

    core = [cpu.get(k) for k in ("api", "worker", "postgres")]
    total = sum(v for v in core if v is not None) if any(v is not None for v in core) else None
    per_order = {k: per(v, orders) for k, v in cpu.items()}
    per_order["api+worker+postgres"] = per(total, orders)
    above_idle: dict[str, float | None] = {}
    for k, v in cpu.items():
        rate = idle.get(k)
        above_idle[k] = None if v is None or rate is None else per(v - rate * measured, orders)
    rates = [idle.get(k) for k in ("api", "worker", "postgres")]
    if total is not None and all(r is not None for r in rates):
        idle_total = sum(r for r in rates if r is not None)
        idle["api+worker+postgres"] = round(idle_total, 3)
        above_idle["api+worker+postgres"] = per(total - idle_total * measured, orders)
    per_ticket = {k: per(v, tickets) for k, v in cpu.items()}
    per_ticket["api+worker+postgres"] = per(total, tickets)
    db = meter.db_delta()
    statements = meter.statement_counts()
    db_per_order = {
        "transactions": per(db["xact_commit"] + db["xact_rollback"], orders, 1),
        "rows_inserted": per(db["tup_inserted"], orders, 1),
        "rows_updated": per(db["tup_updated"], orders, 1),
        "rows_deleted": per(db["tup_deleted"], orders, 1),
    }
    if statements:
        db_per_order["statements"] = per(statements["calls"], orders, 1)
        db_per_order["statements_without_utility"] = per(statements["calls_without_utility"], orders, 1)
    return {
        "results": {
            "elapsed_s": round(elapsed, 2),
            "sold_out": sold_out,
            "time_to_sell_out_s": sell_out,
            "tickets": sale.tickets,
            "orders": sale.orders,
            "tickets_per_s": round(sale.tickets / selling, 1) if selling > 0 else None,
            "orders_per_s": round(sale.orders / selling, 1) if selling > 0 else None,
            "latency": latency,
            "status": {f"{e} {s}": n for (e, s), n in sorted(rec.status.items())},
            "non_2xx": {f"{e} {s} {p}": n for (e, s, p), n in sorted(rec.problems.items())},
            "http_5xx": sum(n for (_, s), n in rec.status.items() if s >= 500),
            "unavailable_503": {f"{e} {w} Retry-After": n for (e, w), n in sorted(rec.unavailable.items())},
            "transport_errors": {f"{e} {k}": n for (e, k), n in sorted(rec.transport.items())},
            "transport_total": sum(rec.transport.values()),
            "retries": dict(rec.retries),
            "holds_with_unknown_outcome": sale.unknown_holds,
            "holds_unsettled_at_end": sale.unsettled,
            "hold_states_seen_by_client": dict(Counter(r.state for r in sale.holds.values())),
            "fan_endings": dict(sale.fan_endings),
            "open_loop": (
                {
                    "launched": sale.launched,
                    "skipped_in_flight_cap": sale.skipped,
                    "launch_lag_p99_ms": _pct(sale.launch_lag, 0.99),
                    "launch_lag_max_ms": _pct(sale.launch_lag, 1.0),
                    "late_launches": len(sale.launch_lag),
                    "outcomes": dict(sale.order_outcomes),
                }
                if args.rate
                else None
            ),
            "cpu_seconds": cpu,
            "cpu_seconds_during_sale": meter.cpu_delta("sale"),
            "cpu_ms_per_order": per_order,
            "cpu_idle_cores": idle,
            "cpu_ms_per_order_above_idle": above_idle,
            "cpu_measured_s": round(measured, 2),
            "cpu_ms_per_ticket": per_ticket,
            "db": db,
            "tables_per_order": meter.table_delta(orders),
            "valkey_commands_per_order": meter.command_delta(orders),
            "db_per_order": db_per_order,
            "pg_stat_statements": statements,
        },
        "audit": {"pass": all(c.ok for c in checks), "checks": [c.__dict__ for c in checks], "facts": facts},
        **extra,
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_report(report: dict[str, Any]) -> None:
    r = report["results"]
    s = report["settings"]
    ev = report["event"]
    load = f"rate {s['rate']}/s for {s['duration']} s" if s["rate"] else f"{s['fans']} fans"
    stack = (
        f"the running stack at {s['api_url']}"
        if s["api_url"]
        else f"{s['server']} {s['api_workers']} API workers, {s['worker_daemons']} worker daemons"
    )
    print()
    print(
        f"flash sale: {s['mode']} x{s['quantity']}, {load}, {s['readers']} readers; {stack};"
        f" event {ev['ga']} GA + {ev['seats']} seats"
    )
    print(
        f"sold {r['tickets']} tickets in {r['orders']} orders in {r['elapsed_s']} s"
        f" (sold out: {'yes, at ' + str(r['time_to_sell_out_s']) + ' s' if r['sold_out'] else 'no'});"
        f" {_fmt(r['tickets_per_s'])} tickets/s, {_fmt(r['orders_per_s'])} orders/s"
    )
    print()
    print(f"{'request':28} {'count':>7} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for name, v in r["latency"].items():
        print(
            f"{name:28} {v['count']:7} {_fmt(v['p50_ms']):>9} {_fmt(v['p95_ms']):>9}"
            f" {_fmt(v['p99_ms']):>9} {_fmt(v['max_ms']):>9}"
        )
    print()
    print("answers:", ", ".join(f"{k} x{n}" for k, n in r["status"].items()))
    if r["non_2xx"]:
        print("non-2xx:", ", ".join(f"{k} x{n}" for k, n in r["non_2xx"].items()))
    if r["unavailable_503"]:
        print("503s:", ", ".join(f"{k} x{n}" for k, n in r["unavailable_503"].items()))
    print("transport errors:", ", ".join(f"{k} x{n}" for k, n in r["transport_errors"].items()) or "none")
    if r["retries"]:
        print("retries:", ", ".join(f"{k} x{n}" for k, n in r["retries"].items()))
    if r["open_loop"]:
        print("open loop:", ", ".join(f"{k} {v}" for k, v in r["open_loop"].items()))
    else:
        print("fans ended by:", ", ".join(f"{k} x{n}" for k, n in r["fan_endings"].items()))
    room = report.get("waiting_room")
    if room:
        print(
            f"waiting room: {room['admitted']} fans admitted at {_fmt(room['rate_measured_per_minute'])}/min"
            f" (setting {room['rate_setting_per_minute']}/min, ratio {_fmt(room['rate_ratio'], 3)}); first"
            f" {_fmt(room['first_admission_after_opening_s'], 2)} s after opening; queue wait p50"
            f" {_fmt(room['queue_wait_p50_s'])} s, p99 {_fmt(room['queue_wait_p99_s'])} s;"
            f" {_fmt(room['tickets_per_s_since_opening'])} tickets/s since opening"
        )
    print()
    print(
        f"CPU from the start until the worker caught up ({r['cpu_measured_s']} s); idle: cores busy before it"
    )
    print(f"{'group':22} {'seconds':>9} {'idle':>6} {'ms/order':>9} {'above idle':>11} {'ms/ticket':>10}")
    for name in (*r["cpu_seconds"], "api+worker+postgres"):
        seconds = r["cpu_seconds"].get(name)
        if name == "api+worker+postgres":
            parts = [r["cpu_seconds"].get(k) for k in ("api", "worker", "postgres")]
            seconds = sum(p for p in parts if p is not None)
        print(
            f"{name:22} {_fmt(seconds, 2):>9} {_fmt(r['cpu_idle_cores'].get(name), 2):>6}"
            f" {_fmt(r['cpu_ms_per_order'].get(name), 2):>9}"
            f" {_fmt(r['cpu_ms_per_order_above_idle'].get(name), 2):>11}"
            f" {_fmt(r['cpu_ms_per_ticket'].get(name), 2):>10}"
        )
    print()
    print("database per order:", ", ".join(f"{k} {_fmt(v, 2)}" for k, v in r["db_per_order"].items()))
    if r.get("valkey_commands_per_order"):
        commands = r["valkey_commands_per_order"]
        print(
            "valkey commands per order:",
            ", ".join(f"{k} {_fmt(v, 2)}" for k, v in list(commands.items())[:12]),
        )
    print()
    for check in report["audit"]["checks"]:
        print(f"{'PASS' if check['ok'] else 'FAIL'}  {check['name']}: {check['detail']}")
    print(f"audit: {'PASS' if report['audit']['pass'] else 'FAIL'}")


RESULTS_HEADER = """# Flash-sale results

One row per run of `bench/flash_sale.py` (see bench/README.md); the JSON report named in
the last column has everything else. Columns: UTC date; the commit measured (`+dirty`: with
uncommitted changes); HTTP server; API processes; worker daemons; mode (ga, seats, mixed)
and tickets per hold; what was on sale; load: closed-loop fans, or `R/s` for an open loop of
R orders a second; tickets and orders sold per second (until sell-out, else over the run);
seconds from the start to the last sale when it sold out (`-`: it did not); p99 latency in
ms of a hold, a checkout request, a seat-map read and the event listing; HTTP 5xx answers;
requests with no HTTP answer; CPU milliseconds per confirmed order of the API, the worker
daemons, PostgreSQL and the three together, from the start until the worker caught up (`-`:
nothing sold); the database audit; a free note.

| date | commit | server | API | workers | mode | on sale | load | tickets/s | orders/s | sell-out s | hold p99 | checkout p99 | seat map p99 | listing p99 | 5xx | transport | CPU API | CPU worker | CPU PG | CPU total | audit | note |
|---|---|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|
"""


def record(report: dict[str, Any], path: Path) -> None:
    r, s, ev = report["results"], report["settings"], report["event"]
    lat = r["latency"]
    per = r["cpu_ms_per_order"]

    def p99(name: str) -> str:
        return _fmt(lat.get(name, {}).get("p99_ms"))

    note = (s.get("note") or "").replace("|", "/")
    row = [
        report["started_at"][:16].replace("T", " "),
        report["commit"],
        s["server"] if not s["api_url"] else "external",
        str(s["api_workers"]) if not s["api_url"] else "-",
        str(s["worker_daemons"]) if not s["api_url"] else "-",
        f"{s['mode']} x{s['quantity']}",
        " + ".join(f"{n} {what}" for n, what in ((ev["ga"], "GA"), (ev["seats"], "seats")) if n),
        (f"{s['rate']}/s" if s["rate"] else f"{s['fans']} fans")
        + (f", room {s['waiting_room']}/min" if s.get("waiting_room") else ""),
        _fmt(r["tickets_per_s"]),
        _fmt(r["orders_per_s"]),
        _fmt(r["time_to_sell_out_s"]),
        p99("hold"),
        p99("checkout"),
        p99("seatmap"),
        p99("listing"),
        str(r["http_5xx"]),
        str(r["transport_total"]),
        _fmt(per.get("api")),
        _fmt(per.get("worker")),
        _fmt(per.get("postgres")),
        _fmt(per.get("api+worker+postgres")),
        "PASS" if report["audit"]["pass"] else "FAIL",
        f"{note} ({path.name})".strip(),
    ]
    if not RESULTS.exists():
        RESULTS.write_text(RESULTS_HEADER)
    with RESULTS.open("a") as handle:
        handle.write("| " + " | ".join(row) + " |\n")


# --- running it ------------------------------------------------------------------------------


def _server_root(port: int) -> list[int]:
    """The HTTP server's master: psutil names one process per listening socket, often a
    worker, so walk up while the parent is still part of the server."""
    pids = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    }
    roots: set[int] = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            while (parent := proc.parent()) is not None and parent.pid != 1:
                argv = " ".join(parent.cmdline())
                if not any(w in argv for w in ("uvicorn", "granian", " serve", "api.app", "spawn_main")):
                    break
                proc = parent
            roots.add(proc.pid)
    return sorted(roots)


def _named(test: Callable[[str, list[str]], bool]) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if test(proc.info["name"] or "", proc.info["cmdline"] or []):
                found.append(proc.info["pid"])
    return found


def _parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def _postmaster(database: str) -> int | None:
    """The postmaster of the bench database when it runs on this machine: the parent of our
    own backend."""
    with contextlib.suppress(psycopg.Error, psutil.Error), psycopg.connect(_libpq(database)) as conn:
        # Looked at while the connection is open: the backend exits with it.
        backend = psutil.Process(int(conn.execute("SELECT pg_backend_pid()").fetchone()[0]))  # type: ignore[index]
        parent = backend.parent()
        if parent is not None and "postgres" in parent.name():
            return parent.pid
    return None


def _valkey_of(api: list[int]) -> list[int]:
    """The Valkey (or Redis) server the API talks to: the one listening on a port the API's
    processes are connected to; there may be others on the machine."""
    ports: set[int] = set()
    for root in api:
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(root)
            for proc in [top, *top.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    ports.update(c.raddr.port for c in proc.net_connections(kind="tcp") if c.raddr)
    found = []
    for pid in _named(lambda name, _: name in ("valkey-server", "redis-server")):
        with contextlib.suppress(psutil.Error):
            listening = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if not c.raddr}
            if listening & ports:
                found.append(pid)
    return found


def external_groups(api_url: str, database: str) -> list[Group]:
    port = urlsplit(api_url).port or 80
    # `boxoffice worker`, `python -m console worker` or `python -m console.cli worker`.
    workers = _named(
        lambda _, argv: (
            "worker" in argv and any(a in ("console", "console.cli") or a.endswith("boxoffice") for a in argv)
        )
    )
    # Only roots: the worker's ticker and horses are found under it.
    workers = [pid for pid in workers if _parent(pid) not in workers]
    api = _server_root(port)
    postmaster = _postmaster(database)
    return [
        Group("api", api),
        Group("worker", workers),
        Group("postgres", [postmaster] if postmaster else []),
        Group("valkey", [], find=lambda: _valkey_of(api)),
        Group("client", [os.getpid()], own_only=True),
    ]


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "mode", "quantity", "fans", "rate", "duration", "max_inflight", "readers", "ga", "seats", "api_workers",
        "worker_daemons", "server", "max_seconds", "fan_budget", "request_timeout", "idle_seconds",
        "drain_seconds", "api_url", "note", "waiting_room", "join_seconds",
    )  # fmt: skip
    return {k: getattr(args, k) for k in keys}


def warnings_for(args: argparse.Namespace) -> list[str]:
    notes = []
    capacity = (args.ga if args.mode != "seats" else 0) + (args.seats if args.mode != "ga" else 0)
    if args.fans * FAN_CAP < capacity:
        notes.append(
            f"{args.fans} fans x {FAN_CAP} tickets each is less than the {capacity} on sale: the per-fan"
            " cap, not the sale, will stop them; use more fans or a smaller event"
        )
    if args.api_url:
        notes.append(
            "a running stack: its own BOXOFFICE_MAX_TICKETS_PER_FAN and BOXOFFICE_RATE_LIMIT_* apply"
            " (one address for every fan: set the per-address limits off)"
        )
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return notes


def execute(
    args: argparse.Namespace,
    database: str,
    redis: str | None,
    base: str,
    groups: list[Group],
    db_kind: str,
    logs: Path,
    stop_stack: Callable[[], None],
) -> int:
    tag = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
    started_at = dt.datetime.now(dt.UTC)
    statements = enable_statements(database)
    event = build_event(
        database, args.ga if args.mode != "seats" else 0, args.seats if args.mode != "ga" else 0, tag
    )
    if args.waiting_room:
        enable_room(database, event.id, args.waiting_room)
    fans = make_fans(database, args.fans, tag)
    for fan in fans:
        fan.kind = {"ga": "ga", "seats": "seats"}.get(args.mode, "ga" if fan.n % 2 == 0 else "seats")
    notes = warnings_for(args)
    meter = Meter(groups, database, statements, redis)
    profiler: Profiler | None = None
    if args.profile:
        (logs.parent / "profile").mkdir(exist_ok=True)
        profiler = Profiler(groups, logs.parent / "profile")

    def mark(label: str) -> None:
        meter.mark(label)
        if profiler is not None:
            profiler.mark(label)

    try:
        print(
            f"event {event.id}: {event.ga} GA places, {event.seats} seats; {len(fans)} fans; go", flush=True
        )
        sale, rec = asyncio.run(drive(args, base, event, fans, mark, database))
        pending, waited = drain(meter, args.drain_seconds, redis)
        # Idle backends report their counters about a second after their last transaction.
        time.sleep(1.5)
        mark("done")
        stop_stack()
        stopped = time.perf_counter()
        checks, facts = audit(database, event, sale, rec, pending)
        wall = meter.wall
        phases = {
            "setup": wall["idle"] - LAUNCHED,
            "idle": wall["start"] - wall["idle"],
            "sale": sale.end - sale.start,
            "settle": wall["sale"] - sale.end,
            "drain": wall["done"] - wall["sale"],
            "stop": stopped - wall["done"],
            "audit": time.perf_counter() - stopped,
        }
        report: dict[str, Any] = {
            "started_at": started_at.isoformat(timespec="seconds"),
            "commit": git_commit(),
            "settings": settings_of(args),
            "warnings": notes,
            "machine": machine(database, redis),
            "database": db_kind,
            "event": event.__dict__,
        }
        report = {
            **report,
            **summarize(
                args,
                sale,
                rec,
                meter,
                checks,
                facts,
                {
                    "waiting_room": room_facts(database, event.id, sale),
                    "drain": {"outbox_pending": pending, "waited_s": waited},
                    "phases_s": {k: round(v, 1) for k, v in phases.items()},
                    "processes": {g.name: g.roots for g in groups},
                    "server_logs": server_errors(logs),
                    "profile": profiler.summary() if profiler is not None else None,
                },
            ),
        }
    finally:
        if profiler is not None:
            profiler.stop()
        meter.close()
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"flash-sale-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_report(report)
    errors = report["server_logs"]
    for name, found in errors.items():
        for line, count in list(found["exceptions"].items())[:5]:
            print(f"{name} log: {count} x {line}")
    for name, found in (report.get("profile") or {}).items():
        print(f"profile {name}: {found['cpu_s']} CPU s sampled")
        print("  by package:", ", ".join(f"{k} {v}%" for k, v in found["percent_by_package"][:8]))
        for caller, percent in found["percent_by_our_caller"][:8]:
            print(f"  {percent:5.1f}%  {caller}")
    print("phases (s):", ", ".join(f"{k} {v}" for k, v in report["phases_s"].items()))
    print(f"report: {path}")
    if not args.no_record:
        record(report, path)
        print(f"row added to {RESULTS}")
    return 0 if report["audit"]["pass"] else 1


def run_local(args: argparse.Namespace, data: Path) -> int:
    logs = data / "logs"
    logs.mkdir()
    with servers(data) as srv:
        migrations.upgrade(srv.database)
        env = {
            **os.environ,
            "BOXOFFICE_DATABASE_URL": srv.database,
            "BOXOFFICE_REDIS_URL": srv.redis,
            "BOXOFFICE_DATA_DIR": str(data / "stack"),
            "BOXOFFICE_MAX_TICKETS_PER_FAN": str(FAN_CAP),
            "BOXOFFICE_OFFLINE_PAYMENTS": "true",
            **RATE_LIMITS,
            "PYTHONUNBUFFERED": "1",
            # The server under test is the checkout this script is in, whatever is installed.
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        }
        stack = Stack(env, logs)
        try:
            port = free_port()
            api = stack.spawn("api", api_argv(args.server, args.api_workers, port))
            workers = [
                stack.spawn(f"worker-{n + 1}", [sys.executable, "-m", "console.cli", "worker"])
                for n in range(args.worker_daemons)
            ]
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, api)
            for worker in workers:
                if worker.poll() is not None:
                    raise BenchError(f"a worker daemon exited with code {worker.returncode}")
            postmaster = srv.postmaster or _postmaster(srv.database)
            groups = [
                Group("api", [api.pid]),
                Group("worker", [w.pid for w in workers]),
                Group("postgres", [postmaster] if postmaster else []),
                Group("valkey", [srv.valkey] if srv.valkey else [], find=lambda: _valkey_of([api.pid])),
                Group("client", [os.getpid()], own_only=True),
            ]
            return execute(args, srv.database, srv.redis, base, groups, srv.kind, logs, stack.stop)
        finally:
            stack.stop()


def run_external(args: argparse.Namespace, data: Path) -> int:
    logs = data / "logs"
    logs.mkdir()
    base = args.api_url.rstrip("/")
    wait_healthy(base, None, timeout=10)
    database = args.database_url
    groups = external_groups(base, database)
    return execute(args, database, None, base, groups, "configured (running stack)", logs, lambda: None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("ga", "seats", "mixed"), default="ga")
    parser.add_argument("--quantity", default="2", help="tickets per hold, 1-100, or 'random' (1 to 4)")
    parser.add_argument("--fans", type=int, default=200, help="fan accounts (closed loop: one buyer each)")
    parser.add_argument("--ga", type=int, default=10_000, help="GA places on sale")
    parser.add_argument("--seats", type=int, default=5_000, help="reserved seats on sale")
    parser.add_argument("--readers", type=int, default=0, help="extra browsers reading the event's pages")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--worker-daemons", type=int, default=1)
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument("--rate", type=float, default=None, help="open loop: orders per second")
    parser.add_argument("--duration", type=float, default=30.0, help="open loop: seconds of launching")
    parser.add_argument("--max-inflight", type=int, default=None, help="open loop: orders in flight at most")
    parser.add_argument(
        "--max-seconds", type=float, default=180.0, help="closed loop: stop buying after this"
    )
    parser.add_argument("--fan-budget", type=int, default=2_000, help="requests one fan may send")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument(
        "--idle-seconds", type=float, default=3.0, help="measure the idle stack's CPU this long first"
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=60.0, help="wait for the worker to catch up after the sale"
    )
    parser.add_argument(
        "--waiting-room",
        type=int,
        default=None,
        metavar="FANS_PER_MINUTE",
        help="sell through the event's waiting room, admitting this many fans a minute",
    )
    parser.add_argument(
        "--join-seconds",
        type=float,
        default=5.0,
        help="with --waiting-room: fans join this long before the opening",
    )
    parser.add_argument("--api-url", help="use a running stack (needs --database-url)")
    parser.add_argument("--database-url", help="with --api-url: the running stack's database")
    parser.add_argument(
        "--profile", action="store_true", help="sample the API and worker with py-spy; summary in the report"
    )
    parser.add_argument("--note", default="", help="free text for the RESULTS.md row")
    parser.add_argument("--no-record", action="store_true", help="do not add a row to bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.quantity != "random" and not (args.quantity.isdigit() and 1 <= int(args.quantity) <= 100):
        parser.error("--quantity is a number from 1 to 100, or 'random'")
    if args.fans < 1 or args.api_workers < 1 or args.worker_daemons < 1 or args.readers < 0:
        parser.error("--fans, --api-workers and --worker-daemons are at least 1; --readers at least 0")
    if args.idle_seconds < 0 or args.drain_seconds < 0 or args.max_seconds <= 0:
        parser.error("--idle-seconds and --drain-seconds are at least 0; --max-seconds is positive")
    if args.rate is not None and (args.rate <= 0 or args.duration <= 0):
        parser.error("--rate and --duration must be positive")
    if args.waiting_room is not None and (args.rate or not 1 <= args.waiting_room <= 100_000):
        parser.error("--waiting-room takes 1 to 100000 fans a minute, and no --rate (fans queue, not orders)")
    if args.join_seconds <= 0:
        parser.error("--join-seconds must be positive")
    if args.max_inflight is None:
        args.max_inflight = max(args.fans, 50)
    if bool(args.api_url) != bool(args.database_url):
        parser.error("--api-url and --database-url go together")
    if (args.mode != "seats" and args.ga < 1) or (args.mode != "ga" and args.seats < 1):
        parser.error(
            f"--mode {args.mode} needs {'--ga' if args.mode != 'seats' else '--seats'} of at least 1"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if aiohttp is None:
        print("aiohttp is not installed: pip install 'boxoffice[bench]'", file=sys.stderr)
        return 2
    if args.profile and shutil.which("py-spy") is None:
        print("--profile needs py-spy on PATH: pip install 'boxoffice[bench]'", file=sys.stderr)
        return 2
    if args.server == "granian" and not args.api_url and importlib.util.find_spec("granian") is None:
        print("granian is not installed (pip install granian); use --server uvicorn", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: object) -> None:
        # SIGTERM unwinds like Ctrl-C, so the stack and the embedded servers are stopped.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-flash-") as tmp:
            if args.api_url:
                return run_external(args, Path(tmp))
            return run_local(args, Path(tmp))
    except BenchError as error:
        print(f"flash_sale: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flash_sale: interrupted; stack and servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
