"""On-call commands for the job queues, failed jobs, staff keys and the audit log.

``boxoffice queues status | drain NAME``, ``boxoffice jobs failed | requeue | delete``,
``boxoffice staff create-key | list | revoke``, ``boxoffice audit tail``. They call the same
functions as the staff API (``jobs.admin``, ``booking.accounts.staff``, ``booking.ops.audit``).

Every command that changes something writes an audit row as the person at this terminal:
for staff keys in the same transaction as the change; for jobs, whose changes live in Redis,
the database is reached before Redis is touched, so a change is not left without its row.
A change the system refuses (an unknown job, a name already taken) leaves a ``failed`` row.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from redis import Redis
from redis.exceptions import RedisError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts import staff as staff_keys
from booking.accounts.models import StaffRole
from booking.errors import BookingError, UnknownQueue
from booking.ops import audit
from booking.ops.models import Outcome
from booking.settings import Settings
from console.cli_common import (
    FAILED,
    USAGE,
    JsonOption,
    YesOption,
    confirm,
    err,
    fail,
    nothing,
    ops_redis,
    out,
    plain,
    print_json,
    settings_of,
    show,
    with_session,
)
from jobs import admin

T = TypeVar("T")

queues_app = typer.Typer(help="Job queues: depths, workers, draining.", no_args_is_help=True)
jobs_app = typer.Typer(help="Failed jobs: list, requeue, delete.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff keys for the console and the staff API.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log of staff and operator actions.", no_args_is_help=True)

QueueOption = Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")]
# A follower reads everything after the last entry it printed, newest first; when a second
# brings more than this, it asks again with a larger limit rather than skip any.
FOLLOW_BATCH = 500
STAFF_NAME_MAX = 120


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def _redis(settings: Settings) -> Iterator[Redis]:
    """The ops Redis; unreachable is one line and exit 1."""
    client = ops_redis(settings)
    try:
        yield client
    except RedisError as error:
        fail(f"cannot reach Redis: {_first_line(error)}")
    finally:
        client.close()


def _queue_or_usage(queue: str | None) -> None:
    """An unknown queue name is bad usage (exit 2), and the message lists the names."""
    try:
        admin.queue_names(queue)
    except UnknownQueue as error:
        fail(error.detail, code=USAGE)


async def _reach(session: AsyncSession) -> None:
    await session.connection()


def _audited_redis_change(
    settings: Settings,
    *,
    action: str,
    target_type: str,
    target_id: str | None,
    change: Callable[[], T],
    details: Callable[[T], dict[str, Any]],
) -> T:
    """Make ``change`` (in Redis) and write its audit row. The database is reached first, so
    a database that is down stops the command before anything changed. A refusal (unknown
    job, job not failed) or an unreachable Redis leaves a ``failed`` row and exits 1."""
    actor = audit.Actor.cli()

    async def work(session: AsyncSession) -> T | BaseException:
        await _reach(session)
        try:
            result = change()
        except (BookingError, RedisError) as error:
            problem = error.code if isinstance(error, BookingError) else "redis-unreachable"
            await audit.record(
                session,
                actor=actor,
                action=action,
                outcome=Outcome.FAILED,
                target_type=target_type,
                target_id=target_id,
                details={"problem": problem, "detail": _first_line(error)},
            )
            await session.commit()
            return error
        await audit.record(
            session,
            actor=actor,
            action=action,
            outcome=Outcome.OK,
            target_type=target_type,
            target_id=target_id,
            details=details(result),
        )
        await session.commit()
        return result

    outcome = with_session(settings, work)
    if isinstance(outcome, BookingError):
        fail(outcome.detail)
    if isinstance(outcome, RedisError):
        fail(f"cannot reach Redis: {_first_line(outcome)}")
    assert not isinstance(outcome, BaseException)
    return outcome


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    title: str,
    empty: str,
    whole: frozenset[str],
) -> None:
    """Rows for people, as ``cli_common.show`` draws them, except that the ``whole`` columns
    (ids an operator copies into the next command) fold onto more lines instead of being
    cut short with an ellipsis on a narrow terminal."""
    if not rows:
        out.print(empty, highlight=False)
        return
    table = Table(title=title, title_justify="left")
    for key, heading in columns:
        table.add_column(heading, overflow="fold" if key in whole else "ellipsis")
    for row in rows:
        table.add_row(*("" if row.get(key) is None else str(row.get(key)) for key, _ in columns))
    out.print(table)


def _when(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


# -- queues -------------------------------------------------------------------------------


@queues_app.command("status")
def queues_status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Each queue's depth (queued, running, scheduled, deferred, failed, how long the next job
    has waited) and every worker with its state, current job and last heartbeat."""
    with _redis(settings_of(ctx)) as redis:
        status = admin.queue_status(redis)
    if as_json:
        print_json(status)
        return
    now = dt.datetime.now(dt.UTC)
    show(
        [
            {**plain(q), "oldest": _age(q.oldest_queued_age)}
            for q in status.queues  # one row per queue, in the order workers take them
        ],
        [
            ("name", "queue"),
            ("queued", "queued"),
            ("started", "running"),
            ("scheduled", "scheduled"),
            ("deferred", "deferred"),
            ("failed", "failed"),
            ("oldest", "next job waited"),
        ],
        as_json=False,
        title="Queues",
        empty="no queues",
    )
    _table(
        [
            {
                "name": w.name,
                "state": w.state,
                "queues": ", ".join(w.queues),
                "current_job": w.current_job,
                "heartbeat": _age((now - w.last_heartbeat).total_seconds()) + " ago"
                if w.last_heartbeat
                else "",
                "birth": _when(w.birth),
            }
            for w in status.workers
        ],
        [
            ("name", "worker"),
            ("state", "state"),
            ("queues", "queues"),
            ("current_job", "current job"),
            ("heartbeat", "last heartbeat"),
            ("birth", "started"),
        ],
        title="Workers",
        empty="no workers are running: start one with `boxoffice worker`",
        whole=frozenset({"name", "current_job"}),
    )


@queues_app.command("drain")
def queues_drain(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The queue: holds, outbox or default.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run the jobs queued on NAME now, in this process, until the queue is empty (at most
    as many as were queued when it started). Exit 3 if it is already empty, 1 if any job
    failed (see `boxoffice jobs failed`). Ctrl-C stops after the running job."""
    settings = settings_of(ctx)
    _queue_or_usage(name)
    with _redis(settings) as redis:
        queued = admin.queue_status(redis)
        total = next(q.queued for q in queued.queues if q.name == name)
        if total == 0:
            nothing(f"queue {name} is empty; nothing to drain", as_json, {"queue": name, "done": 0})
        confirm(f"Run the {_count(total, 'job')} queued on {name} here, now?", yes)
        # The row is written after the run (it records the counts): make sure it can be.
        with_session(settings, _reach)
        try:
            result = _drain_with_progress(redis, name, total, show_progress=not as_json)
        except RedisError as error:
            _record(settings, "queue.drain", Outcome.FAILED, "queue", name, {"detail": _first_line(error)})
            raise
    _record(settings, "queue.drain", Outcome.OK, "queue", name, plain(result))
    if as_json:
        print_json(result)
    else:
        left = f"; {result.left} queued since" if result.left else ""
        out.print(f"drained {name}: ran {result.done} of {result.total}, {result.failed} failed{left}")
    if result.failed:
        fail(f"{_count(result.failed, 'job')} failed: see `boxoffice jobs failed --queue {name}`", FAILED)


def _drain_with_progress(redis: Redis, name: str, total: int, *, show_progress: bool) -> admin.DrainResult:
    if not show_progress:
        return admin.drain(redis, name)
    columns = (TextColumn(f"draining {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(name, total=total)
        return admin.drain(redis, name, lambda done, _: progress.update(task, completed=done))


def _record(
    settings: Settings,
    action: str,
    outcome: Outcome,
    target_type: str,
    target_id: str | None,
    details: dict[str, Any],
) -> None:
    async def work(session: AsyncSession) -> None:
        await audit.record(
            session,
            actor=audit.Actor.cli(),
            action=action,
            outcome=outcome,
            target_type=target_type,
            target_id=target_id,
            details=details,
        )
        await session.commit()

    with_session(settings, work)


# -- jobs ---------------------------------------------------------------------------------


@jobs_app.command("failed")
def jobs_failed(
    ctx: typer.Context,
    queue: QueueOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Failed jobs, most recent first: function, arguments, when, and the error's last line."""
    _queue_or_usage(queue)
    with _redis(settings_of(ctx)) as redis:
        failed = admin.failed_jobs(redis, queue, limit)
    if as_json:
        print_json({"items": failed})
        return
    _table(
        [
            {**plain(job), "call": f"{job.function}({job.args})", "ended": _when(job.ended_at)}
            for job in failed
        ],
        [("id", "job"), ("queue", "queue"), ("ended", "failed at"), ("call", "call"), ("error", "error")],
        title="Failed jobs",
        empty="no failed jobs",
        whole=frozenset({"id", "call", "error"}),
    )


@jobs_app.command("requeue")
def jobs_requeue(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(help="The failed job to run again.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Requeue every failed job (of --queue).")] = False,
    queue: QueueOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Put a failed job (JOB_ID) or every failed job (--all, asks first) back on its queue."""
    if (job_id is None) == (not every):
        fail("give a JOB_ID or --all (not both)", code=USAGE)
    if queue is not None and not every:
        fail("--queue goes with --all", code=USAGE)
    settings = settings_of(ctx)
    if job_id is not None:
        with _redis(settings) as redis:
            requeued = _audited_redis_change(
                settings,
                action="job.requeue",
                target_type="job",
                target_id=job_id,
                change=lambda: admin.requeue(redis, job_id),
                details=lambda job: {"queue": job.queue},
            )
        if as_json:
            print_json(requeued)
        else:
            out.print(f"requeued job {requeued.id} on {requeued.queue}", highlight=False)
        return
    _queue_or_usage(queue)
    where = f" on {queue}" if queue else ""
    with _redis(settings) as redis:
        status = admin.queue_status(redis)
        count = sum(q.failed for q in status.queues if queue in (None, q.name))
        if count == 0:
            nothing(f"no failed jobs{where}; nothing to requeue", as_json, {"requeued": 0})
        confirm(f"Requeue {_count(count, 'failed job')}{where}?", yes)
        done = _audited_redis_change(
            settings,
            action="jobs.requeue_failed",
            target_type="queue",
            target_id=queue,
            change=lambda: admin.requeue_all(redis, queue),
            details=lambda n: {"requeued": n},
        )
    if as_json:
        print_json({"requeued": done})
    else:
        out.print(f"requeued {_count(done, 'failed job')}{where}", highlight=False)


@jobs_app.command("delete")
def jobs_delete(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The failed job to delete.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a failed job and its results for good (asks first). Only failed jobs."""
    settings = settings_of(ctx)
    confirm(f"Delete failed job {job_id} for good?", yes)
    with _redis(settings) as redis:
        queue = _audited_redis_change(
            settings,
            action="job.delete",
            target_type="job",
            target_id=job_id,
            change=lambda: admin.delete_failed(redis, job_id),
            details=lambda origin: {"queue": origin},
        )
    if as_json:
        print_json({"id": job_id, "queue": queue, "deleted": True})
    else:
        out.print(f"deleted failed job {job_id} (queue {queue})", highlight=False)


# -- staff keys ---------------------------------------------------------------------------


@staff_app.command("create-key")
def staff_create_key(
    ctx: typer.Context,
    role: Annotated[StaffRole, typer.Option(case_sensitive=False, help="What the key may do.")],
    name: Annotated[str, typer.Option(help="A unique name: who or which till holds it.")],
    as_json: JsonOption = False,
) -> None:
    """Create a staff key and print its secret, once: only its hash is kept."""
    if not name.strip() or len(name) > STAFF_NAME_MAX or "\x00" in name:
        fail(f"--name must be 1 to {STAFF_NAME_MAX} characters", code=USAGE)
    actor = audit.Actor.cli()

    async def work(session: AsyncSession) -> staff_keys.IssuedKey | None:
        try:
            issued = await staff_keys.create_key(session, name, role)
        except (staff_keys.StaffKeyExists, IntegrityError):
            # IntegrityError: another terminal took the name between the check and the insert.
            await session.rollback()
            await audit.record(
                session,
                actor=actor,
                action="staff_key.create",
                outcome=Outcome.FAILED,
                target_type="staff_key",
                target_id=name,
                details={"role": role.value, "problem": "name-taken"},
            )
            await session.commit()
            return None
        await audit.record(
            session,
            actor=actor,
            action="staff_key.create",
            outcome=Outcome.OK,
            target_type="staff_key",
            target_id=name,
            details={"role": role.value, "key_id": str(issued.id)},
        )
        await session.commit()
        return issued

    issued = with_session(settings_of(ctx), work)
    if issued is None:
        fail(f"a staff key called {name!r} already exists (names stay taken after revocation)")
    if as_json:
        print_json({"id": issued.id, "name": issued.name, "role": issued.role, "secret": issued.secret})
        return
    out.print(f"created staff key {issued.name!r} ({issued.role.value})", highlight=False)
    out.print(issued.secret, highlight=False, soft_wrap=True)
    err.print("[bold yellow]Store this secret now: it is not shown again.[/]", highlight=False)


@staff_app.command("list")
def staff_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every staff key, live ones first (never the secrets)."""

    async def work(session: AsyncSession) -> list[staff_keys.KeyView]:
        return await staff_keys.list_keys(session)

    keys = with_session(settings_of(ctx), work)
    if as_json:
        print_json({"items": keys})
        return
    show(
        [
            {
                "name": k.name,
                "role": k.role.value,
                "state": "revoked" if k.revoked_at else "live",
                "created": _when(k.created_at),
                "used": _when(k.last_used_at) or "never",
                "revoked": _when(k.revoked_at),
            }
            for k in keys
        ],
        [
            ("name", "name"),
            ("role", "role"),
            ("state", "state"),
            ("created", "created"),
            ("used", "last used"),
            ("revoked", "revoked"),
        ],
        as_json=False,
        title="Staff keys",
        empty="no staff keys: make one with `boxoffice staff create-key`",
    )


@staff_app.command("revoke")
def staff_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Revoke a staff key (asks first): it stops working at once; its name stays taken."""
    confirm(f"Revoke staff key {name!r} (it stops working at once)?", yes)
    actor = audit.Actor.cli()

    async def work(session: AsyncSession) -> bool:
        revoked = await staff_keys.revoke_key(session, name)
        await audit.record(
            session,
            actor=actor,
            action="staff_key.revoke",
            outcome=Outcome.OK if revoked else Outcome.FAILED,
            target_type="staff_key",
            target_id=name,
            details={} if revoked else {"problem": "staff-key-not-found"},
        )
        await session.commit()
        return revoked

    if not with_session(settings_of(ctx), work):
        fail(f"no live staff key called {name!r}")
    if as_json:
        print_json({"name": name, "revoked": True})
    else:
        out.print(f"revoked staff key {name!r}", highlight=False)


# -- audit log ----------------------------------------------------------------------------


def _target(entry: audit.AuditView) -> str:
    if entry.target_type is None:
        return entry.target_id or ""
    return f"{entry.target_type}:{entry.target_id}" if entry.target_id else entry.target_type


def _audit_line(entry: audit.AuditView) -> str:
    target = _target(entry)
    return (
        f"#{entry.id} {_when(entry.at)} {entry.actor_type}:{entry.actor_name} "
        f"{entry.action} {target} {entry.outcome}"
    ).replace("  ", " ")


@audit_app.command("tail")
def audit_tail(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many of the latest entries.")] = 20,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. job.requeue.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries until Ctrl-C.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """The latest audit entries, oldest first. With --follow, new ones as they come (checked
    every second), each printed once; with --follow --json, one JSON object per line."""
    settings = settings_of(ctx)

    def emit(entry: audit.AuditView) -> None:
        if as_json:
            _print_json_line(entry)
        else:
            out.print(_audit_line(entry), highlight=False, soft_wrap=True)

    async def work(session: AsyncSession) -> None:
        latest = list(reversed(await audit.tail(session, limit=limit, action=action)))
        await session.rollback()  # end the read: a follower must not sit in an open transaction
        if not follow:
            _show_audit(latest, as_json)
            return
        for entry in latest:
            emit(entry)
        last = latest[-1].id if latest else await _newest_id(session)
        # Ctrl-C ends the loop between polls, never in the middle of a read: cancelling a
        # query on the way out made the exit wait on the database.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
                if stop.is_set():
                    return
                for entry in await _entries_after(session, last, action):
                    emit(entry)
                    last = entry.id
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        with_session(settings, work)
    except KeyboardInterrupt:
        return


async def _newest_id(session: AsyncSession) -> int:
    newest = await audit.tail(session, limit=1)
    await session.rollback()
    return newest[0].id if newest else 0


async def _entries_after(session: AsyncSession, last: int, action: str | None) -> list[audit.AuditView]:
    """Every entry after ``last``, oldest first. ``tail`` answers newest first with a limit,
    so a full answer may have left older ones out: ask again with a larger limit."""
    batch = FOLLOW_BATCH
    while True:
        entries = await audit.tail(session, limit=batch, after_id=last, action=action)
        await session.rollback()
        if len(entries) < batch:
            return list(reversed(entries))
        batch *= 2


def _show_audit(entries: list[audit.AuditView], as_json: bool) -> None:
    if as_json:
        print_json({"items": entries})
        return
    _table(
        [
            {
                "id": e.id,
                "at": _when(e.at),
                "actor": f"{e.actor_type}:{e.actor_name}",
                "action": e.action,
                "target": _target(e),
                "outcome": e.outcome,
            }
            for e in entries
        ],
        [
            ("id", "#"),
            ("at", "at"),
            ("actor", "actor"),
            ("action", "action"),
            ("target", "target"),
            ("outcome", "outcome"),
        ],
        title="Audit log",
        empty="the audit log is empty",
        whole=frozenset({"target"}),
    )


def _print_json_line(payload: Any) -> None:
    """One JSON object on one line (JSON Lines), flushed: what a follower's reader expects."""
    sys.stdout.write(json.dumps(plain(payload), sort_keys=True) + "\n")
    sys.stdout.flush()
