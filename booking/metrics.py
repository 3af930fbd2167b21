"""Boxoffice's Prometheus metrics: every metric object of the product, and how a process's
metrics reach a scrape.

Counters move where the thing happens, and for what a transaction decides (a hold made, an
order confirmed) only once that transaction commits: ``count_on_commit`` parks the increment
on the session, and it is applied when the outermost transaction commits, or dropped when
the transaction (or the savepoint it was counted in) rolls back. A rolled-back hold is not a
hold created.

One process or several. With ``PROMETHEUS_MULTIPROC_DIR`` set before the first import of
``prometheus_client`` (``boxoffice up`` and ``boxoffice serve`` set it for their children),
every process writes its values to memory-mapped files in that folder and any process's
scrape adds them all up: the API's ``/metrics`` then shows the counters of every API
process and of the worker daemon on the machine. Counters of a process that has exited stay
counted; its per-process gauges are dropped (``forget_dead_processes``). Without the
variable (tests, one process) the metrics live in this process's default registry.

Cost on the buying path: an increment is a lock and an addition (with the folder, a write
into a memory-mapped page too); nothing here makes a network round trip.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The shared folder ``boxoffice up`` and ``boxoffice serve`` make, under the data folder.
DATA_FOLDER = "metrics"

# With the folder set, the metrics below write into it as they are made: an operator's
# folder that does not exist yet is made rather than failing the process's start.
if _configured := os.environ.get(MULTIPROC_ENV):
    Path(_configured).mkdir(parents=True, exist_ok=True)

# A ``_created`` timestamp beside every counter doubles the series and says nothing an alert
# uses; in multi-process mode they are not written at all, so one process alone matches.
disable_created_metrics()  # type: ignore[no-untyped-call]

# --- what fans and staff do --------------------------------------------------------------

HOLDS_CREATED = Counter(
    "boxoffice_holds_created",
    "Holds created (committed), by who holds: a fan online, or box-office staff at a till.",
    ["by"],
)
HOLDS_EXPIRED = Counter(
    "boxoffice_holds_expired",
    "Holds whose deadline passed, tidied by the sweeper (or by on-call's release-expired): "
    "their seats went back on sale.",
)
HOLDS_RELEASED = Counter(
    "boxoffice_holds_released",
    "Holds given up before their deadline, by the fan or by staff (box office, on-call).",
    ["by"],
)
ORDERS_CONFIRMED = Counter(
    "boxoffice_orders_confirmed",
    "Orders confirmed (paid holds turned into tickets), by channel: online or box_office.",
    ["channel"],
)
PAYMENTS_FAILED = Counter(
    "boxoffice_payments_failed",
    "Payments that ended failed: declined (by the card or the provider, cancelled included) "
    "or provider_error (the provider refused the request, or never received it).",
    ["reason"],
)
REFUNDS_ISSUED = Counter(
    "boxoffice_refunds_issued",
    "Refunds paid back: confirmed by the payment provider, or handed back in person at a till.",
)
OVERSELL_REJECTIONS = Counter(
    "boxoffice_oversell_rejections",
    "Requests the no-oversell guard turned down, by reason (seat_taken, sold_out: none or too "
    "few left, ticket_cap) and stage (hold: nothing was held; confirm: a late payment found "
    "its seats gone or its fan at the cap, and is refunded).",
    ["reason", "stage"],
)
IDEMPOTENCY_REPLAYS = Counter(
    "boxoffice_idempotency_replays",
    "Requests answered with the stored response of an earlier one with the same Idempotency-Key.",
)

# --- waiting rooms ------------------------------------------------------------------------

WAITING_ROOM_JOINS = Counter(
    "boxoffice_waiting_room_joins",
    "Places given in waiting-room queues (a repeated join keeps its place and is not counted).",
)
WAITING_ROOM_ADMISSIONS = Counter(
    "boxoffice_waiting_room_admissions",
    "Fans admitted from a waiting room to shop (recorded; each fan once per event).",
)
WAITING_ROOM_LAPSED = Counter(
    "boxoffice_waiting_room_lapsed",
    "Places lost because the fan stopped checking them for longer than the room's grace.",
)
# Set by the admission tick each second: one series per room the daemon ticks.
WAITING_ROOM_WAITING = Gauge(
    "boxoffice_waiting_room_waiting",
    "Fans waiting in an event's waiting room, as the admission tick last counted them.",
    ["event_id"],
    multiprocess_mode="livemostrecent",
)
RATE_LIMITED = Counter(
    "boxoffice_rate_limited",
    "Requests refused with 429, by policy: a rate limit (hold-per-fan, signup-per-address, ...) "
    "or the sign-in back-off (login-backoff).",
    ["policy"],
)

# --- the database pool (per process) ------------------------------------------------------

# Per process (with a shared folder, one series per live pid), by pool: "api", the one pool
# of an API process. Labelled so that a process without a pool (a server's supervising
# process, the daemon) reports none, rather than a pool of size 0.
DB_POOL_SIZE = Gauge(
    "boxoffice_db_pool_size",
    "Database connections this process's pool may hold at once (no overflow).",
    ["pool"],
    multiprocess_mode="liveall",
)
DB_POOL_CHECKED_OUT = Gauge(
    "boxoffice_db_pool_checked_out",
    "Database connections of this process's pool in use now.",
    ["pool"],
    multiprocess_mode="liveall",
)
DB_POOL_WAIT = Histogram(
    "boxoffice_db_pool_wait_seconds",
    "How long a request waited for a pooled database connection (opening one included).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DB_POOL_TIMEOUTS = Counter(
    "boxoffice_db_pool_timeouts",
    "Waits for a pooled connection that ran out (each answered 503 with Retry-After).",
)

# --- the payment providers' breakers (per process) ------------------------------------------

# Each API process judges a provider on its own (booking.payments.breaker), so one series per
# live pid: any 2 means some fans' checkouts are refused with 503 (their holds kept).
PAYMENT_BREAKER_STATE = Gauge(
    "boxoffice_payment_breaker_state",
    "This process's breaker for a payment provider: 0 closed (calls go through), 1 half-open "
    "(one trial call decides), 2 open (calls paused after repeated provider failures).",
    ["provider"],
    multiprocess_mode="liveall",
)
PAYMENT_BREAKER_OPENED = Counter(
    "boxoffice_payment_breaker_opened",
    "Times a process paused calls to a payment provider: its failures reached the threshold, "
    "or its trial call after a cool-down failed.",
    ["provider"],
)
PAYMENT_BREAKER_REFUSED = Counter(
    "boxoffice_payment_breaker_refused",
    "Checkouts answered 503 without calling the provider while calls to it were paused; "
    "each fan's hold was kept.",
    ["provider"],
)

# --- the scrape itself --------------------------------------------------------------------

SCRAPE_ERRORS = Counter(
    "boxoffice_scrape_errors",
    "Scrapes that could not read a source (database or redis) in time; its gauges were left out.",
    ["source"],
)


# --- counting once a transaction commits --------------------------------------------------

_PENDING = "boxoffice.metrics_pending"
_Pending = list[tuple[SessionTransaction, Counter, float]]


def count_on_commit(session: AsyncSession, counter: Counter, amount: float = 1) -> None:
    """Add ``amount`` to ``counter`` when the session's transaction commits; nothing if it,
    or the savepoint this is called in, rolls back instead. Outside any transaction
    (nothing left to commit) it counts at once."""
    sync = session.sync_session
    where = sync.get_nested_transaction() or sync.get_transaction()
    if where is None:
        counter.inc(amount)
        return
    pending: _Pending = sync.info.setdefault(_PENDING, [])
    pending.append((where, counter, amount))


def _inside(transaction: SessionTransaction | None, boundary: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is boundary:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_commit")
def _apply_counts(session: Session) -> None:
    # Also fired when a savepoint is released: its counts wait for the real commit.
    if session.get_nested_transaction() is not None:
        return
    pending: _Pending = session.info.pop(_PENDING, [])
    for _, counter, amount in pending:
        counter.inc(amount)


@event.listens_for(Session, "after_rollback")
def _drop_counts(session: Session) -> None:
    pending: _Pending | None = session.info.get(_PENDING)
    if not pending:
        return
    # The transaction rolled back is the innermost savepoint if there is one, else the root.
    boundary = session.get_nested_transaction()
    if boundary is None:
        session.info.pop(_PENDING, None)
        return
    pending[:] = [entry for entry in pending if not _inside(entry[0], boundary)]


@event.listens_for(Session, "after_transaction_end")
def _forget_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # A session closed without committing ends its transaction with neither event above.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


# --- one process or many -------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The folder this machine's processes share their metrics through, if there is one."""
    return os.environ.get(MULTIPROC_ENV) or None


def empty_multiprocess_dir(path: Path) -> Path:
    """Make ``path`` an empty metrics folder for a new run of the processes that share it
    (values left by an earlier run would otherwise be added to this one's). Only the
    metrics' own ``*.db`` files are removed, whatever else the folder holds."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_processes(path: str) -> list[int]:
    """Drop the per-process gauges of processes no longer running (one killed, say, which
    could not say so itself); their counters stay counted. Returns their pids."""
    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        found = _LIVE_FILE.match(os.path.basename(name))
        if found is not None and not _running(int(found[1])):
            dead.add(int(found[1]))
    for pid in dead:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


def process_exited() -> None:
    """Called as a process that shares a metrics folder ends: its per-process gauges go."""
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


class ProcessMetrics(Collector):
    """Every process's metrics on this machine when they share a folder (the dead ones'
    counters included, their per-process gauges not), else this process's own."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else multiprocess_dir()

    def collect(self) -> Iterable[Metric]:
        if self.path is None:
            yield from REGISTRY.collect()
            return
        forget_dead_processes(self.path)
        yield from MultiProcessCollector(None, path=self.path).collect()  # type: ignore[no-untyped-call]


def scrape_registry(*collectors: Collector, path: str | None = None) -> CollectorRegistry:
    """A registry for one scrape: ``collectors``, which compute their values as they are
    collected, then the process metrics (see ``ProcessMetrics``), read after them so that
    what the collectors counted (``SCRAPE_ERRORS``) shows in the same scrape."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    registry.register(ProcessMetrics(path))
    return registry
