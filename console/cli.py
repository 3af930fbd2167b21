"""`boxoffice`: run the system, migrate, load the demo, and act on it.

Exit codes: 0 done, 1 failed, 2 bad usage or bad settings, 3 nothing to do (see
``console/cli_common.py``). Every failure is one line on stderr naming what is wrong, never a
traceback.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

# Only light modules here (Typer, Rich, the command declarations): `--help` and `--version`
# must not load the database, Redis or web stacks. A command imports what it runs inside
# its own body (see console/cli_common.py).
from console.cli_catalog import catalog_app
from console.cli_common import JsonOption, err, fail, first_line, out, settings_of
from console.cli_events import events_app
from console.cli_ops import holds_app, orders_app, refunds_app, sale_app
from console.cli_queues import audit_app, jobs_app, queues_app, staff_app
from console.cli_tickets import tickets_app
from console.cli_waiting_room import waiting_room_app

if TYPE_CHECKING:
    from booking.settings import Settings
    from console.stack import StackInfo

app = typer.Typer(
    name="boxoffice",
    help="Boxoffice: ticket booking for high-demand on-sales.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="Demo data.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(queues_app, name="queues")
app.add_typer(jobs_app, name="jobs")
app.add_typer(staff_app, name="staff")
app.add_typer(audit_app, name="audit")
app.add_typer(holds_app, name="holds")
app.add_typer(orders_app, name="orders")
app.add_typer(sale_app, name="sale")
app.add_typer(refunds_app, name="refunds")
app.add_typer(tickets_app, name="tickets")
app.add_typer(waiting_room_app, name="waiting-room")
app.add_typer(catalog_app, name="catalog")
app.add_typer(events_app, name="events")


def _version(value: bool) -> None:
    if value:
        from booking import __version__

        out.print(f"boxoffice {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    # The settings are read by the first command that needs them (cli_common.settings_of),
    # so that help and a mistyped command never load them.
    del version  # answered by its eager callback


def _server_errors() -> tuple[type[Exception], ...]:
    """What an unreachable server raises. Called in ``except`` clauses, which evaluate their
    types only once an error is raised: a command that succeeds never imports these."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import OperationalError

    from console.stack import StackError

    return (StackError, OperationalError, RedisError)


def _unreachable(error: Exception) -> NoReturn:
    from redis.exceptions import RedisError
    from sqlalchemy.exc import OperationalError

    if isinstance(error, OperationalError):
        fail(f"cannot reach the database: {first_line(error.orig or error)}")
    if isinstance(error, RedisError):
        fail(f"cannot reach Redis: {first_line(error)}")
    fail(first_line(error))


@app.command()
def up(ctx: typer.Context) -> None:
    """Run everything: servers (embedded unless URLs are set), migrations, demo, API, worker."""
    from rich.panel import Panel

    from booking import __version__
    from booking.logs import get_logger, setup_logging
    from console.local import LocalStack, Prepared

    settings = settings_of(ctx)

    def ready(info: StackInfo, prepared: Prepared) -> None:
        demo = (
            f"loaded {prepared.demo.events} events ({prepared.demo.units} tickets)"
            if prepared.demo.loaded
            else "already loaded"
        )
        out.print(
            Panel.fit(
                f"API            {info.api_url}\n"
                f"API docs       {info.api_url}/schema\n"
                f"Staff key      {prepared.console_key}\n"
                f"Demo data      {demo}\n"
                f"Data folder    {settings.data_dir.resolve()}\n\n"
                "Try: curl " + info.api_url + "/events\n"
                "Stop with Ctrl-C.",
                title=f"Boxoffice {__version__} is up",
            )
        )

    # The stack's own lines (servers, restarts) in the same shape as its children's.
    setup_logging(settings)
    stack = LocalStack(settings, log=get_logger("boxoffice.up").info)
    try:
        code = stack.run(ready)
    except _server_errors() as error:
        _unreachable(error)
    out.print("boxoffice: stopped")
    raise typer.Exit(code)


# Open event streams per API worker, with room to spare: a thousand idle ones cost about
# 36 MiB and 1% of a core (bench/seatmap_stream.py).
STREAM_BACKPRESSURE = 8192
STREAM_SHUTDOWN_SECONDS = 10


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address [default: BOXOFFICE_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: BOXOFFICE_API_PORT]")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Processes [default: BOXOFFICE_API_WORKERS]")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="granian or uvicorn [default: BOXOFFICE_API_SERVER]"),
    ] = None,
) -> None:
    """Run the HTTP API against the configured servers or a running `boxoffice up`."""
    from booking import metrics
    from booking.logs import propagate_to_root, setup_logging

    settings = settings_of(ctx)
    setup_logging(settings)
    _export_stack_urls(settings)
    chosen = server or settings.api_server
    bind = host or settings.api_host
    listen = port or settings.api_port
    processes = workers or settings.api_workers
    if processes > 1 and metrics.multiprocess_dir() is None:
        _share_metrics(settings, forks=chosen == "granian")
    if chosen == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        Granian(
            "api.app:create_app",
            address=bind,
            port=listen,
            interface=Interfaces.ASGI,
            workers=processes,
            factory=True,
            websockets=False,
            log_access=settings.access_log,
            # Granian's own lines (start-up, worker exits) still show; one per request only
            # when asked for. Both through booking.logs' handler, not granian's own.
            log_dictconfig=propagate_to_root("_granian", "granian.access"),
            respawn_failed_workers=True,
            # Granian counts an open event stream (a live seat map) as a request in progress
            # and, at this bound, stops reading new requests: a worker's thousands of idle
            # streams must not starve the buying path. The work bound is the app's own
            # (api.overload); this one only has to stay above it plus the streams.
            backpressure=STREAM_BACKPRESSURE,
            # Open streams never end by themselves: a stopping worker cuts them after this
            # (their clients reconnect elsewhere and resume from their Last-Event-ID).
            workers_kill_timeout=STREAM_SHUTDOWN_SECONDS,
        ).serve()
        return
    if chosen != "uvicorn":
        err.print(f"boxoffice: unknown server {chosen!r}: choose granian or uvicorn", highlight=False)
        raise typer.Exit(2)
    import uvicorn

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=bind,
        port=listen,
        workers=processes,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=settings.access_log,
        # No handlers of uvicorn's own: its lines go to booking.logs' (set up by the app
        # factory in each worker process).
        log_config=None,
        # Not uvicorn's own X-Forwarded-For handling (it believes any loopback peer): the
        # client address is the app's to decide, from BOXOFFICE_TRUSTED_PROXIES alone, under
        # either server (api.rate_limits).
        proxy_headers=False,
        # Open event streams never end by themselves: on shutdown uvicorn would wait for
        # them for ever. After this they are cut; clients reconnect and resume.
        timeout_graceful_shutdown=STREAM_SHUTDOWN_SECONDS,
    )


@app.command()
def worker(
    ctx: typer.Context,
    burst: Annotated[bool, typer.Option(help="Exit once the queues are empty.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every job, not only failures.")
    ] = False,
) -> None:
    """Run the job worker on the holds, outbox and default queues (with the periodic ticker)."""
    from booking.logs import setup_logging
    from console.stack import redis_url
    from daemon.worker import run

    settings = settings_of(ctx)
    setup_logging(settings)
    _export_stack_urls(settings)
    # The daemon's work (mail with PDF tickets above all) may be late by seconds, the buyers'
    # requests may not: on a busy box the API and PostgreSQL get the CPU first.
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    if settings.daemon_metrics_port is not None:
        from daemon.metrics import serve_metrics

        serve_metrics(settings.daemon_metrics_host, settings.daemon_metrics_port)
    try:
        run(
            redis_url(settings),
            burst=burst,
            logging_level="INFO" if verbose else "WARNING",
            heartbeat_seconds=settings.daemon_heartbeat_seconds,
        )
    except _server_errors() as error:
        _unreachable(error)


@app.command()
def status(
    ctx: typer.Context,
    as_json: JsonOption = False,
    api: Annotated[
        str | None,
        typer.Option(help="API address [default: the running `boxoffice up`'s, else BOXOFFICE_API_PORT]"),
    ] = None,
) -> None:
    """Every part at once: API readiness, PostgreSQL, Redis, migrations, worker daemons, sweeper
    and outbox relay, scheduler, queues and failed jobs, and `boxoffice up`'s children. Exit 0
    when all are healthy, 1 when any is not (each part answers within a few seconds)."""
    from console.cli_status import run as report_status

    raise typer.Exit(report_status(settings_of(ctx), api_url=api, as_json=as_json))


@app.command("console")
def operator_console(
    ctx: typer.Context,
    api: Annotated[str | None, typer.Option(help="API address [default: the running `boxoffice up`]")] = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="BOXOFFICE_STAFF_KEY",
            help="Staff key (bosk_...) [default: the local stack's, in the data folder]",
        ),
    ] = None,
    refresh: Annotated[float, typer.Option(min=0.5, max=60, help="Seconds between refreshes.")] = 2.0,
) -> None:
    """Open the operator console (dashboard, box office, holds, on call) on the staff API."""
    from console.local import CONSOLE_KEY_FILE
    from console.stack import StackInfo
    from console.tui.app import ConsoleApp
    from console.tui.client import StaffClient

    settings = settings_of(ctx)
    if api is None:
        info = StackInfo.read(settings.data_dir)
        if info is None:
            fail("no API: pass --api URL, or start the local stack with `boxoffice up`", code=2)
        api = info.api_url
    if key is None:
        try:
            key = (settings.data_dir / CONSOLE_KEY_FILE).read_text().strip()
        except OSError:
            fail(
                "no staff key: pass --key or set BOXOFFICE_STAFF_KEY "
                "(`boxoffice staff create-key` makes one)",
                2,
            )
    ConsoleApp(
        StaffClient(api, key), refresh_seconds=refresh, tickets_dir=settings.data_dir / "tickets"
    ).run()


def _share_metrics(settings: Settings, *, forks: bool) -> None:
    """Let this server's processes add up their metrics: each writes them to
    ``<data>/metrics`` (emptied now), and a scrape of any one of them reads them all. Not
    when ``PROMETHEUS_MULTIPROC_DIR`` is set already: `boxoffice up` (or the operator) has
    chosen a folder for every process of the machine, the worker daemon's included.

    A server that ``forks`` its workers (granian) would hand them the metrics this process
    loaded before the folder was set, each then counting for itself only: it is told to
    start them afresh instead, as uvicorn always does."""
    import multiprocessing

    from booking import metrics

    folder = metrics.empty_multiprocess_dir((settings.data_dir / metrics.DATA_FOLDER).resolve())
    os.environ[metrics.MULTIPROC_ENV] = str(folder)
    if forks:
        multiprocessing.set_start_method("spawn", force=True)


def _export_stack_urls(settings: Settings) -> None:
    """Fill unset URLs from a running `boxoffice up`, in the environment, so that processes
    this one spawns (uvicorn workers, rq work horses) read the same servers."""
    from console.stack import StackInfo

    if settings.database_url is not None and settings.redis_url is not None:
        return
    info = StackInfo.read(settings.data_dir)
    if info is None:
        fail(
            "no database or Redis configured: set BOXOFFICE_DATABASE_URL and BOXOFFICE_REDIS_URL, "
            "or start the local stack with `boxoffice up`"
        )
    if settings.database_url is None:
        os.environ["BOXOFFICE_DATABASE_URL"] = info.database_url
    if settings.redis_url is None:
        os.environ["BOXOFFICE_REDIS_URL"] = info.redis_url
    from booking.settings import get_settings

    get_settings.cache_clear()


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
) -> None:
    """Migrate the database to REVISION (default: the newest)."""
    from booking import migrations
    from console.stack import database_url

    try:
        with database_url(settings_of(ctx)) as url:
            migrations.upgrade(url, revision)
            now = migrations.current(url)
    except _server_errors() as error:
        _unreachable(error)
    out.print(f"database at revision {now}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the revision the database is at."""
    from booking import migrations
    from console.stack import database_url

    try:
        with database_url(settings_of(ctx)) as url:
            now = migrations.current(url)
    except _server_errors() as error:
        _unreachable(error)
    out.print(now or "empty (no migrations applied)")


@demo_app.command("load")
def demo_load(ctx: typer.Context) -> None:
    """Load the demo venues and events (once; a second run changes nothing)."""
    import asyncio

    from booking import migrations
    from booking.catalog.demo import load_demo
    from booking.db import engine_scope, make_sessionmaker
    from console.stack import database_url

    async def load(url: str) -> None:
        async with (
            engine_scope(url, pool_size=1, max_overflow=0) as engine,
            make_sessionmaker(engine)() as session,
        ):
            result = await load_demo(session)
        if result.loaded:
            out.print(f"loaded {result.venues} venues, {result.events} events, {result.units} tickets")
        else:
            out.print("demo data already loaded; nothing changed")

    try:
        with database_url(settings_of(ctx)) as url:
            migrations.upgrade(url)
            asyncio.run(load(url))
    except _server_errors() as error:
        _unreachable(error)


def main() -> None:
    app(prog_name="boxoffice")


if __name__ == "__main__":
    main()
