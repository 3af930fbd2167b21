"""On-call commands for the job queues, failed jobs, staff keys and the audit log.

``boxoffice queues status | drain NAME``, ``boxoffice jobs failed | requeue | delete``,
``boxoffice staff create-key | list | revoke``, ``boxoffice audit tail``. They call the same
functions as the staff API (``jobs.admin``, ``booking.accounts.staff``, ``booking.ops.audit``).

Every command that changes something writes an audit row as the person at this terminal:
for staff keys in the same transaction as the change; for jobs, whose changes live in Redis,
the database is reached before Redis is touched, so a change is not left without its row.
A change the system refuses (an unknown job, a name already taken) leaves a ``failed`` row.

RQ, Redis and the booking services are imported inside each command, so that loading this
module (for ``--help``, or for another command) costs nothing but Typer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from console.cli_common import (
    FAILED,
    ID,
    PROSE,
    USAGE,
    Column,
    JsonOption,
    YesOption,
    audited,
    confirm,
    count,
    duration,
    enum_parser,
    err,
    fail,
    first_line,
    nothing,
    ops_redis,
    plain,
    print_json,
    record,
    report,
    say,
    settings_of,
    show,
    when,
    with_session,
)

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy.ext.asyncio import AsyncSession

    from booking.accounts import staff as staff_keys
    from booking.accounts.models import StaffRole
    from booking.ops import audit
    from booking.ops.models import Outcome
    from booking.settings import Settings
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


def _staff_roles() -> type[StaffRole]:
    from booking.accounts.models import StaffRole

    return StaffRole


@contextmanager
def _redis(settings: Settings) -> Iterator[Redis]:
    """The ops Redis; unreachable is one line and exit 1."""
    from redis.exceptions import RedisError

    client = ops_redis(settings)
    try:
        yield client
    except RedisError as error:
        fail(f"cannot reach Redis: {first_line(error)}")
    finally:
        client.close()


def _queue_or_usage(queue: str | None) -> None:
    """An unknown queue name is bad usage (exit 2), and the message lists the names."""
    from booking.errors import UnknownQueue
    from jobs.queues import queue_names

    try:
        queue_names(queue)
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

    async def work(session: AsyncSession) -> T:
        await _reach(session)

        async def make() -> T:
            return change()

        return await audited(
            session, make, action=action, target_type=target_type, target_id=target_id, details=details
        )

    return with_session(settings, work)


# -- queues -------------------------------------------------------------------------------


@queues_app.command("status")
def queues_status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Each queue's depth (queued, running, scheduled, deferred, failed, how long the next job
    has waited) and every worker with its state, current job and last heartbeat."""
    from jobs import admin

    with _redis(settings_of(ctx)) as redis:
        status = admin.queue_status(redis)
    if as_json:
        print_json(status)
        return
    now = dt.datetime.now(dt.UTC)
    show(
        status.queues,  # one row per queue, in the order workers take them
        [
            Column("name", "queue"),
            Column("queued", "queued"),
            Column("started", "running"),
            Column("scheduled", "scheduled"),
            Column("deferred", "deferred"),
            Column("failed", "failed"),
            Column("oldest", "next job waited"),
        ],
        as_json=False,
        title="Queues",
        empty="no queues",
        display=lambda q: {**plain(q), "oldest": duration(q.oldest_queued_age)},
    )
    show(
        status.workers,
        [
            Column("name", "worker", ID),
            Column("state", "state"),
            Column("queues", "queues"),
            Column("current_job", "current job", ID),
            Column("heartbeat", "last heartbeat"),
            Column("birth", "started"),
        ],
        as_json=False,
        title="Workers",
        empty="no workers are running: start one with `boxoffice worker`",
        display=lambda w: {
            "name": w.name,
            "state": w.state,
            "queues": ", ".join(w.queues),
            "current_job": w.current_job,
            "heartbeat": duration((now - w.last_heartbeat).total_seconds()) + " ago"
            if w.last_heartbeat
            else "",
            "birth": when(w.birth),
        },
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
    from redis.exceptions import RedisError

    from booking.ops.models import Outcome
    from jobs import admin

    settings = settings_of(ctx)
    _queue_or_usage(name)
    with _redis(settings) as redis:
        queued = admin.queue_status(redis)
        total = next(q.queued for q in queued.queues if q.name == name)
        if total == 0:
            nothing(f"queue {name} is empty; nothing to drain", as_json, {"queue": name, "done": 0})
        confirm(f"Run the {count(total, 'job')} queued on {name} here, now?", yes)
        # The row is written after the run (it records the counts): make sure it can be.
        with_session(settings, _reach)
        try:
            result = _drain_with_progress(redis, name, total, show_progress=not as_json)
        except RedisError as error:
            _record(settings, "queue.drain", Outcome.FAILED, "queue", name, {"detail": first_line(error)})
            raise
    _record(settings, "queue.drain", Outcome.OK, "queue", name, plain(result))
    left = f"; {result.left} queued since" if result.left else ""
    report(
        as_json, result, f"drained {name}: ran {result.done} of {result.total}, {result.failed} failed{left}"
    )
    if result.failed:
        fail(f"{count(result.failed, 'job')} failed: see `boxoffice jobs failed --queue {name}`", FAILED)


def _drain_with_progress(redis: Redis, name: str, total: int, *, show_progress: bool) -> admin.DrainResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from jobs import admin

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
    target_type: str | None,
    target_id: str | None,
    details: dict[str, Any],
) -> None:
    async def work(session: AsyncSession) -> None:
        await record(
            session,
            action=action,
            outcome=outcome,
            target_type=target_type,
            target_id=target_id,
            details=details,
        )

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
    from jobs import admin

    _queue_or_usage(queue)
    with _redis(settings_of(ctx)) as redis:
        failed = admin.failed_jobs(redis, queue, limit)
    show(
        failed,
        [
            Column("id", "job", ID),
            Column("queue", "queue"),
            Column("ended", "failed at"),
            Column("call", "call"),
            Column("error", "error", PROSE),
        ],
        as_json=as_json,
        title="Failed jobs",
        empty="no failed jobs",
        display=lambda job: {
            **plain(job),
            "call": f"{job.function}({job.args})",
            "ended": when(job.ended_at),
        },
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
    from jobs import admin

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
        report(as_json, requeued, f"requeued job {requeued.id} on {requeued.queue}")
        return
    _queue_or_usage(queue)
    where = f" on {queue}" if queue else ""
    with _redis(settings) as redis:
        status = admin.queue_status(redis)
        failed = sum(q.failed for q in status.queues if queue in (None, q.name))
        if failed == 0:
            nothing(f"no failed jobs{where}; nothing to requeue", as_json, {"requeued": 0})
        confirm(f"Requeue {count(failed, 'failed job')}{where}?", yes)
        done = _audited_redis_change(
            settings,
            action="jobs.requeue_failed",
            target_type="queue",
            target_id=queue,
            change=lambda: admin.requeue_all(redis, queue),
            details=lambda n: {"requeued": n},
        )
    report(as_json, {"requeued": done}, f"requeued {count(done, 'failed job')}{where}")


@jobs_app.command("delete")
def jobs_delete(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The failed job to delete.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a failed job and its results for good (asks first). Only failed jobs."""
    from jobs import admin

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
    report(
        as_json,
        {"id": job_id, "queue": queue, "deleted": True},
        f"deleted failed job {job_id} (queue {queue})",
    )


# -- staff keys ---------------------------------------------------------------------------


@staff_app.command("create-key")
def staff_create_key(
    ctx: typer.Context,
    role: Annotated[
        str,
        typer.Option(
            parser=enum_parser(_staff_roles),
            metavar="[box_office|on_call|gate|admin]",
            help="What the key may do.",
        ),
    ],
    name: Annotated[str, typer.Option(help="A unique name: who or which till holds it.")],
    as_json: JsonOption = False,
) -> None:
    """Create a staff key and print its secret, once: only its hash is kept."""
    from sqlalchemy.exc import IntegrityError

    from booking.accounts import staff as staff_keys
    from booking.accounts.models import StaffRole
    from booking.ops.models import Outcome

    if not name.strip() or len(name) > STAFF_NAME_MAX or "\x00" in name:
        fail(f"--name must be 1 to {STAFF_NAME_MAX} characters", code=USAGE)
    chosen = StaffRole(role)

    async def work(session: AsyncSession) -> staff_keys.IssuedKey | None:
        try:
            issued = await staff_keys.create_key(session, name, chosen)
        except (staff_keys.StaffKeyExists, IntegrityError):
            # IntegrityError: another terminal took the name between the check and the insert.
            await session.rollback()
            await record(
                session,
                action="staff_key.create",
                outcome=Outcome.FAILED,
                target_type="staff_key",
                target_id=name,
                details={"role": chosen.value, "problem": "name-taken"},
            )
            return None
        # The key and its audit row commit together.
        await record(
            session,
            action="staff_key.create",
            outcome=Outcome.OK,
            target_type="staff_key",
            target_id=name,
            details={"role": chosen.value, "key_id": str(issued.id)},
        )
        return issued

    issued = with_session(settings_of(ctx), work)
    if issued is None:
        fail(f"a staff key called {name!r} already exists (names stay taken after revocation)")
    if as_json:
        print_json({"id": issued.id, "name": issued.name, "role": issued.role, "secret": issued.secret})
        return
    say(f"created staff key {issued.name!r} ({issued.role.value})")
    say(issued.secret)
    err.print("[bold yellow]Store this secret now: it is not shown again.[/]", highlight=False)


@staff_app.command("list")
def staff_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every staff key, live ones first (never the secrets)."""
    from booking.accounts import staff as staff_keys

    async def work(session: AsyncSession) -> list[staff_keys.KeyView]:
        return await staff_keys.list_keys(session)

    show(
        with_session(settings_of(ctx), work),
        [
            Column("name", "name", PROSE),
            Column("role", "role"),
            Column("state", "state"),
            Column("created", "created"),
            Column("used", "last used"),
            Column("revoked", "revoked"),
        ],
        as_json=as_json,
        title="Staff keys",
        empty="no staff keys: make one with `boxoffice staff create-key`",
        display=lambda k: {
            "name": k.name,
            "role": k.role.value,
            "state": "revoked" if k.revoked_at else "live",
            "created": when(k.created_at),
            "used": when(k.last_used_at) or "never",
            "revoked": when(k.revoked_at),
        },
    )


@staff_app.command("revoke")
def staff_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Revoke a staff key (asks first): it stops working at once; its name stays taken."""
    from booking.accounts import staff as staff_keys
    from booking.ops.models import Outcome

    confirm(f"Revoke staff key {name!r} (it stops working at once)?", yes)

    async def work(session: AsyncSession) -> bool:
        revoked = await staff_keys.revoke_key(session, name)
        await record(
            session,
            action="staff_key.revoke",
            outcome=Outcome.OK if revoked else Outcome.FAILED,
            target_type="staff_key",
            target_id=name,
            details={} if revoked else {"problem": "staff-key-not-found"},
        )
        return revoked

    if not with_session(settings_of(ctx), work):
        fail(f"no live staff key called {name!r}")
    report(as_json, {"name": name, "revoked": True}, f"revoked staff key {name!r}")


# -- audit log ----------------------------------------------------------------------------


def _target(entry: audit.AuditView) -> str:
    if entry.target_type is None:
        return entry.target_id or ""
    return f"{entry.target_type}:{entry.target_id}" if entry.target_id else entry.target_type


def _audit_line(entry: audit.AuditView) -> str:
    target = _target(entry)
    return (
        f"#{entry.id} {when(entry.at)} {entry.actor_type}:{entry.actor_name} "
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
    import asyncio

    from booking.ops import audit

    settings = settings_of(ctx)

    def emit(entry: audit.AuditView) -> None:
        if as_json:
            _print_json_line(entry)
        else:
            say(_audit_line(entry))

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
    from booking.ops import audit

    newest = await audit.tail(session, limit=1)
    await session.rollback()
    return newest[0].id if newest else 0


async def _entries_after(session: AsyncSession, last: int, action: str | None) -> list[audit.AuditView]:
    """Every entry after ``last``, oldest first. ``tail`` answers newest first with a limit,
    so a full answer may have left older ones out: ask again with a larger limit."""
    from booking.ops import audit

    batch = FOLLOW_BATCH
    while True:
        entries = await audit.tail(session, limit=batch, after_id=last, action=action)
        await session.rollback()
        if len(entries) < batch:
            return list(reversed(entries))
        batch *= 2


def _show_audit(entries: list[audit.AuditView], as_json: bool) -> None:
    show(
        entries,
        [
            Column("id", "#"),
            Column("at", "at"),
            Column("actor", "actor", PROSE),
            Column("action", "action"),
            Column("target", "target", ID),
            Column("outcome", "outcome"),
        ],
        as_json=as_json,
        title="Audit log",
        empty="the audit log is empty",
        display=lambda e: {
            "id": e.id,
            "at": when(e.at),
            "actor": f"{e.actor_type}:{e.actor_name}",
            "action": e.action,
            "target": _target(e),
            "outcome": e.outcome,
        },
    )


def _print_json_line(payload: Any) -> None:
    """One JSON object on one line (JSON Lines), flushed: what a follower's reader expects."""
    sys.stdout.write(json.dumps(plain(payload), sort_keys=True) + "\n")
    sys.stdout.flush()
