"""`boxoffice status`: the whole system at once, for people (a table) and scripts (``--json``).

The parts: the API (its ``/ready`` answer), PostgreSQL, Redis, the migrations, each worker
daemon (its heartbeat, see ``jobs.heartbeat``), the hold sweeper and the outbox relay (their
last successful runs), the scheduler (RQ's scheduler locks and the daemons' tickers), the
queues with their failed jobs, and the children of a ``boxoffice up`` on this machine (its
status file, see ``console.supervisor``). Exit code 0 when every part is healthy, 1 when
any is not; the table says which and why, and ``--json`` lists them under ``down``.

Every part is asked at once, and each within a few seconds at most
(``booking.ops.readiness.CHECK_TIMEOUT_SECONDS`` for a server, ``API_TIMEOUT_SECONDS`` for the
API): a server that refuses costs nothing, one that is stopped costs its timeout, never a
hang. Blocking RQ reads run in a daemon thread that the command does not wait for past its
deadline.

Shown but not counted against health: failed jobs and waiting jobs. A failed job stays listed
for a day after its cause is gone, and mail may lag by minutes under load by design; both are
for a person to judge. A supervisor that is not running is not a fault either: only
``boxoffice up`` has one. Nor are the API's payment breakers (read from its ``/metrics``):
payments paused by a provider outage are the provider's fault, shown for on-call to see.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rich.table import Table
from rich.text import Text

from booking.settings import Settings
from console.cli_common import duration, err, fail, out, plain, print_json

if TYPE_CHECKING:
    from jobs.heartbeat import DaemonBeat

API_TIMEOUT_SECONDS = 3.0
QUEUES_TIMEOUT_SECONDS = 3.0
FAILED_SHOWN = 5
# A periodic task is late when it has not succeeded for this many of its intervals, plus
# slack for a loaded host: its daemons are alive, but its ticker or its queue is stuck.
LATE_INTERVALS = 3
LATE_SLACK_SECONDS = 10.0
WATCHED_TASKS = (("sweep", "hold sweeper"), ("relay", "outbox relay"), ("admit", "waiting-room admission"))

T = TypeVar("T")


@dataclass
class Report:
    """What every part said. Each part is a dict with at least ``status`` and ``healthy``."""

    parts: dict[str, dict[str, Any]]

    @property
    def down(self) -> list[str]:
        return [name for name, part in self.parts.items() if not part["healthy"]]

    @property
    def healthy(self) -> bool:
        return not self.down

    def document(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "down": self.down, **self.parts}


def _first_line(error: BaseException) -> str:
    from booking.ops.readiness import first_line

    return first_line(error)


def _in_daemon_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """Run blocking ``work`` in a daemon thread. Not the loop's executor: its threads are
    joined when the interpreter exits, so a Redis stalling mid-way would hold the command with
    it; a daemon thread past its caller's deadline is simply left behind."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = work()
        except BaseException as error:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(error)
        else:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_result(result)

    threading.Thread(target=target, name="boxoffice-status", daemon=True).start()
    return asyncio.wrap_future(future)


# -- the parts ----------------------------------------------------------------------------


async def _api(url: str) -> dict[str, Any]:
    import httpx

    ready_url = url.rstrip("/") + "/ready"
    try:
        async with (
            asyncio.timeout(API_TIMEOUT_SECONDS + 0.5),
            httpx.AsyncClient(timeout=API_TIMEOUT_SECONDS) as client,
        ):
            response = await client.get(ready_url)
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, OSError) as error:
        return {
            "url": ready_url,
            "status": "unreachable",
            "healthy": False,
            "http_status": None,
            "ready": None,
            "error": _first_line(error),
        }
    try:
        body = response.json()
    except ValueError:
        body = None
    code = response.status_code
    status = "ready" if code == 200 else "not_ready" if code == 503 else f"http {code}"
    return {
        "url": ready_url,
        "status": status,
        "healthy": code == 200,
        "http_status": code,
        "ready": body,
        "error": None,
    }


BREAKER_METRIC = "boxoffice_payment_breaker_state"
# The gauge's values (booking.payments.breaker.GAUGE_VALUE), by name.
BREAKER_STATES = {0: "closed", 1: "half_open", 2: "open"}


async def _payments(url: str) -> dict[str, Any]:
    """The API processes' payment breakers, from its ``/metrics``: per provider, how many
    processes are closed, trying (half-open) or paused (open). Never counted against health."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    metrics_url = url.rstrip("/") + "/metrics"
    try:
        async with (
            asyncio.timeout(API_TIMEOUT_SECONDS + 0.5),
            httpx.AsyncClient(timeout=API_TIMEOUT_SECONDS) as client,
        ):
            response = await client.get(metrics_url)
        response.raise_for_status()
        families = list(text_string_to_metric_families(response.text))
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, OSError, ValueError) as error:
        return {"status": "unknown", "healthy": True, "providers": {}, "error": _first_line(error)}
    providers: dict[str, dict[str, int]] = {}
    for family in families:
        if family.name != BREAKER_METRIC:
            continue
        for sample in family.samples:
            name = sample.labels.get("provider", "?")
            counts = providers.setdefault(name, dict.fromkeys(BREAKER_STATES.values(), 0))
            counts[BREAKER_STATES.get(int(sample.value), "open")] += 1
    paused = sorted(name for name, counts in providers.items() if counts["open"] or counts["half_open"])
    status = "paused: " + ", ".join(paused) if paused else "ok"
    return {"status": status, "healthy": True, "providers": providers, "error": None}


def _check_part(check: Any) -> dict[str, Any]:
    return {**plain(check), "healthy": check.ok}


def _not_configured(what: str, variable: str) -> dict[str, Any]:
    return {
        "status": "not configured",
        "healthy": False,
        "error": f"no {what}: set {variable}, or start the local stack with `boxoffice up`",
    }


async def _database(url: str | None) -> dict[str, dict[str, Any]]:
    if url is None:
        missing = _not_configured("database", "BOXOFFICE_DATABASE_URL")
        return {"database": missing, "migrations": dict(missing)}
    from booking.db import make_async_engine
    from booking.ops.readiness import check_database_and_migrations

    engine = make_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=1.0)
    try:
        database, migrations = await check_database_and_migrations(engine)
    finally:
        # Closing a connection to a stopped server must not become the hang we avoided.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await engine.dispose()
    return {"database": _check_part(database), "migrations": _check_part(migrations)}


def _unknown(reason: str) -> dict[str, Any]:
    return {"status": "unknown", "healthy": False, "error": reason}


async def _redis(url: str | None) -> dict[str, dict[str, Any]]:
    names = ("redis", "daemons", *(task for task, _ in WATCHED_TASKS), "scheduler", "queues")
    if url is None:
        missing = _not_configured("Redis", "BOXOFFICE_REDIS_URL")
        return {name: dict(missing) if name == "redis" else _unknown("no Redis") for name in names}
    from redis.exceptions import RedisError

    from booking.ops.readiness import CHECK_TIMEOUT_SECONDS, check_redis
    from booking.redis_client import async_client
    from jobs import heartbeat

    client = async_client(url)
    try:
        ping = await check_redis(client)
        parts = {"redis": _check_part(ping)}
        if not ping.ok:
            return parts | {name: _unknown("Redis is unavailable") for name in names[1:]}
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS * 2):
                beats = await heartbeat.read_daemons_async(client)
                locks = await _scheduler_locks(client)
        except (TimeoutError, OSError, RedisError) as error:
            reason = f"cannot read Redis: {_first_line(error)}"
            return parts | {name: _unknown(reason) for name in names[1:]}
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await client.aclose()
    parts["daemons"] = _daemons(beats)
    parts.update(_periodic(beats))
    parts["scheduler"] = _scheduler(beats, locks)
    parts["queues"] = await _queues(url)
    return parts


async def _scheduler_locks(client: Any) -> dict[str, str | None]:
    """Each queue's RQ scheduler lock: the name of the scheduler holding it, or None."""
    from rq.scheduler import SCHEDULER_LOCKING_KEY_TEMPLATE

    from jobs.queues import QUEUES

    values = await client.mget([SCHEDULER_LOCKING_KEY_TEMPLATE % name for name in QUEUES])
    return {
        name: (value.decode() if isinstance(value, bytes) else value)
        for name, value in zip(QUEUES, values, strict=True)
    }


def _daemons(beats: Sequence[DaemonBeat]) -> dict[str, Any]:
    from jobs.heartbeat import DaemonStatus, summarize

    summary = summarize(beats)
    return {
        **plain(summary),
        "healthy": summary.status is DaemonStatus.ALIVE,
        "items": [plain(beat) for beat in beats],
    }


def _periodic(beats: Sequence[DaemonBeat]) -> dict[str, dict[str, Any]]:
    """The watched periodic tasks: ``ok`` when one succeeded recently enough, ``late`` when
    its last success is too old, ``not yet`` when none has run but the oldest live daemon
    is still younger than that (healthy), ``never`` when none has run in a daemon that old."""
    from daemon.periodic import PERIODIC
    from jobs.heartbeat import DaemonStatus, last_run

    every = {task.name: task.every for task in PERIODIC}
    now = time.time()
    alive = [beat for beat in beats if beat.status is DaemonStatus.ALIVE]
    oldest = max((now - beat.started_at.timestamp() for beat in alive), default=None)
    parts = {}
    for task, _ in WATCHED_TASKS:
        limit = every[task] * LATE_INTERVALS + LATE_SLACK_SECONDS
        run = last_run(beats, task)
        if not alive:
            status, healthy = "no daemon", False
        elif run is not None:
            status, healthy = ("ok", True) if run.age_seconds <= limit else ("late", False)
        elif oldest is not None and oldest <= limit:
            status, healthy = "not yet", True
        else:
            status, healthy = "never", False
        parts[task] = {
            "status": status,
            "healthy": healthy,
            "every_seconds": every[task],
            "late_after_seconds": limit,
            "last_run_at": run.at.isoformat() if run else None,
            "age_seconds": run.age_seconds if run else None,
        }
    return parts


def _scheduler(beats: Sequence[DaemonBeat], locks: dict[str, str | None]) -> dict[str, Any]:
    """Healthy when every queue's scheduler lock is held (delayed retries get enqueued) and
    some live daemon's ticker ticks (periodic jobs get enqueued)."""
    from jobs.heartbeat import STALE_INTERVALS, DaemonStatus

    tickers = [
        beat
        for beat in beats
        if beat.status is DaemonStatus.ALIVE
        and beat.ticker_age_seconds is not None
        and beat.ticker_age_seconds <= STALE_INTERVALS * beat.interval_seconds
    ]
    unlocked = [name for name, holder in locks.items() if holder is None]
    if not tickers:
        status = "no ticker"
    elif unlocked:
        status = "unscheduled: " + ", ".join(unlocked)
    else:
        status = "ok"
    return {
        "status": status,
        "healthy": status == "ok",
        "locks": locks,
        "tickers": [
            {"daemon": beat.id, "pid": beat.ticker_pid, "age_seconds": beat.ticker_age_seconds}
            for beat in tickers
        ],
    }


async def _queues(url: str) -> dict[str, Any]:
    from booking.redis_client import sync_client
    from jobs import admin

    def read() -> tuple[admin.Status, list[admin.FailedJob]]:
        redis = sync_client(url)
        try:
            return admin.queue_status(redis), admin.failed_jobs(redis, limit=FAILED_SHOWN)
        finally:
            redis.close()

    try:
        async with asyncio.timeout(QUEUES_TIMEOUT_SECONDS):
            status, failed = await _in_daemon_thread(read)
    except Exception as error:  # whatever RQ raised, the other parts still get reported
        return _unknown(f"cannot read the queues: {_first_line(error)}")
    return {
        "status": "ok",
        "healthy": True,
        "items": [plain(queue) for queue in status.queues],
        "failed": sum(queue.failed for queue in status.queues),
        "failed_jobs": [plain(job) for job in failed],
    }


def _supervisor(settings: Settings) -> dict[str, Any]:
    from console.supervisor import SUPERVISOR_FILE, read_status

    found = read_status(settings.data_dir / SUPERVISOR_FILE)
    if found is None:
        return {"status": "not running", "healthy": True, "pid": None, "children": []}
    down = [child.name for child in found.children if not child.running]
    return {
        "status": "restarting: " + ", ".join(down) if down else "running",
        "healthy": not down,
        "pid": found.pid,
        "children": [plain(child) for child in found.children],
    }


async def gather(settings: Settings, api_url: str, database_url: str | None, redis_url: str | None) -> Report:
    """Ask every part at once; returns when the slowest has answered or timed out."""
    api, database, redis, payments = await asyncio.gather(
        _api(api_url), _database(database_url), _redis(redis_url), _payments(api_url)
    )
    parts: dict[str, dict[str, Any]] = {"api": api}
    parts |= database
    parts |= redis
    parts["supervisor"] = _supervisor(settings)
    parts["payments"] = payments
    return Report(parts)


# -- rendering ----------------------------------------------------------------------------


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else duration(seconds) + " ago"


def _ms(part: dict[str, Any]) -> str:
    latency = part.get("latency_ms")
    return f"{latency:.1f} ms" if latency is not None else ""


def _why(part: dict[str, Any], fallback: str = "") -> str:
    return str(part.get("error") or fallback)


def _breakers(part: dict[str, Any]) -> str:
    """Each provider's processes by breaker state, e.g. ``stripe: 2 closed, 1 open (...)``."""
    if part["error"]:
        return f"breakers not read: {part['error']}"
    described = []
    for name, counts in sorted(part["providers"].items()):
        states = ", ".join(f"{n} {state.replace('_', '-')}" for state, n in counts.items() if n)
        paused = " (checkouts answered 503, holds kept)" if counts["open"] else ""
        described.append(f"{name}: {states}{paused}")
    return "; ".join(described) or "no breaker reported"


def _rows(report: Report) -> list[tuple[str, str, bool | None, str]]:
    """(part, status, healthy or None for information only, details)."""
    parts = report.parts
    rows: list[tuple[str, str, bool | None, str]] = []
    api = parts["api"]
    if api["status"] == "unreachable":
        api_detail = f"{api['url']}: {api['error']}"
    else:
        api_detail = f"{api['url']} answered {api['http_status']}"
        if isinstance(api.get("ready"), dict):
            checks = api["ready"].get("checks", {})
            failing = [
                f"{name} {check.get('status')}"
                for name, check in checks.items()
                if check.get("status") != "ok"
            ]
            if failing:
                api_detail += " (" + ", ".join(failing) + ")"
    rows.append(("API", api["status"], api["healthy"], api_detail))
    database = parts["database"]
    rows.append(("PostgreSQL", database["status"], database["healthy"], _why(database, _ms(database))))
    redis = parts["redis"]
    rows.append(("Redis", redis["status"], redis["healthy"], _why(redis, _ms(redis))))
    migrations = parts["migrations"]
    if "code_revision" in migrations:
        at = migrations.get("database_revision") or "none"
        revisions = f"database at {at}, code at {migrations['code_revision']}"
        rows.append(("Migrations", migrations["status"], migrations["healthy"], _why(migrations, revisions)))
    else:
        rows.append(("Migrations", migrations["status"], migrations["healthy"], _why(migrations)))

    daemons = parts["daemons"]
    items = daemons.get("items") or []
    if not items:
        hint = "no heartbeat: start one with `boxoffice worker`" if daemons["status"] == "missing" else ""
        rows.append(("Daemons", daemons["status"], daemons["healthy"], _why(daemons, hint)))
    for beat in items:
        job = f" {beat['current_job']}" if beat.get("current_job") else ""
        started = dt.datetime.fromisoformat(beat["started_at"]).timestamp()
        detail = (
            f"{beat['state']}{job}; beat {_ago(beat['age_seconds'])}; up {duration(time.time() - started)}; "
            f"pid {beat['pid']} on {beat['host']}"
        )
        rows.append((f"Daemon {beat['id']}", beat["status"], beat["status"] == "alive", detail))
    for task, label in WATCHED_TASKS:
        part = parts[task]
        if "every_seconds" in part:
            detail = f"last run {_ago(part['age_seconds'])} (every {part['every_seconds']}s)"
        else:
            detail = _why(part)
        rows.append((label.capitalize(), part["status"], part["healthy"], detail))
    scheduler = parts["scheduler"]
    if "locks" in scheduler:
        held = ", ".join(name for name, holder in scheduler["locks"].items() if holder)
        detail = f"locks held for: {held or 'none'}; {len(scheduler['tickers'])} ticker(s) ticking"
    else:
        detail = _why(scheduler)
    rows.append(("Scheduler", scheduler["status"], scheduler["healthy"], detail))

    queues = parts["queues"]
    if "items" in queues:
        for queue in queues["items"]:
            waited = queue.get("oldest_queued_age")
            head = f", next waited {duration(waited)}" if waited is not None else ""
            rows.append(
                (
                    f"Queue {queue['name']}",
                    f"{queue['queued']} queued",
                    None,
                    f"{queue['started']} running, {queue['scheduled']} scheduled, "
                    f"{queue['deferred']} deferred, {queue['failed']} failed{head}",
                )
            )
        for job in queues["failed_jobs"]:
            rows.append(
                ("Failed job", job["queue"], None, f"{job['id']} {job['function']}: {job.get('error') or ''}")
            )
        if queues["failed"] > len(queues["failed_jobs"]):
            rows.append(("Failed jobs", str(queues["failed"]), None, "see `boxoffice jobs failed`"))
    else:
        rows.append(("Queues", queues["status"], queues["healthy"], _why(queues)))

    payments = parts.get("payments")
    if payments is not None:
        rows.append(("Payments", payments["status"], None, _breakers(payments)))

    supervisor = parts["supervisor"]
    if supervisor["pid"] is None:
        rows.append(("Supervisor", supervisor["status"], None, "no `boxoffice up` on this machine"))
    else:
        rows.append(
            (
                "Supervisor",
                supervisor["status"],
                supervisor["healthy"],
                f"`boxoffice up`, pid {supervisor['pid']}",
            )
        )
        for child in supervisor["children"]:
            up = (
                f"up {duration(time.time() - child['started_at'])}; "
                if child["running"] and child["started_at"]
                else ""
            )
            exited = f"exited with code {child['exit_code']}; " if child.get("exit_code") is not None else ""
            rows.append(
                (
                    f"Child {child['name']}",
                    "running" if child["running"] else "down",
                    bool(child["running"]),
                    f"{exited}{up}pid {child['pid']}, {child['restarts']} restart(s)",
                )
            )
    return rows


def render(report: Report) -> None:
    table = Table(title="Boxoffice status", title_justify="left")
    table.add_column("part", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("details", overflow="fold")
    for part, status, healthy, detail in _rows(report):
        style = "" if healthy is None else "green" if healthy else "bold red"
        table.add_row(part, Text(status, style=style), Text(detail))
    out.print(table)


# -- the command --------------------------------------------------------------------------


# A backstop only: every part has its own, shorter deadline.
GATHER_TIMEOUT_SECONDS = 20.0


def _on_own_loop(work: Callable[[], Coroutine[Any, Any, T]], within: float) -> T:
    """Run ``work`` on an event loop of its own, in a daemon thread, and return its answer
    as soon as it is there. The loop is tidied afterwards, in that thread, without this one
    waiting: a database probe given up on (see ``booking.ops.readiness``) may take seconds
    more to end, and the command must not wait for it.

    Raises:
        TimeoutError: no answer within ``within`` seconds.
    """
    answer: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        with asyncio.Runner() as runner:
            try:
                answer.set_result(runner.run(work()))
            except BaseException as error:
                answer.set_exception(error)

    threading.Thread(target=target, name="boxoffice-status-loop", daemon=True).start()
    return answer.result(timeout=within)


def run(settings: Settings, *, api_url: str | None, as_json: bool) -> int:
    """Report every part; returns the exit code (0 healthy, 1 not). Parts that did not all
    answer within ``GATHER_TIMEOUT_SECONDS`` (each has its own, shorter deadline) are one
    line on stderr and exit 1."""
    from console.stack import StackInfo

    info = StackInfo.read(settings.data_dir)
    api = api_url or (info.api_url if info else f"http://{settings.api_host}:{settings.api_port}")
    database_url = settings.database_url or (info.database_url if info else None)
    redis_url = settings.redis_url or (info.redis_url if info else None)
    try:
        report = _on_own_loop(lambda: gather(settings, api, database_url, redis_url), GATHER_TIMEOUT_SECONDS)
    except TimeoutError:
        fail(f"the parts did not all answer within {GATHER_TIMEOUT_SECONDS:g}s")
    if as_json:
        print_json(report.document())
    else:
        render(report)
        if report.healthy:
            out.print("everything is healthy", highlight=False)
        else:
            reasons = ", ".join(f"{name} ({report.parts[name]['status']})" for name in report.down)
            err.print(f"[bold red]boxoffice:[/] not healthy: {reasons}", highlight=False, soft_wrap=True)
    return 0 if report.healthy else 1
