"""`boxoffice up`: the whole system on one machine, started and stopped as one.

Order of start: servers (embedded or configured), migrations, demo data, keys, then the
supervised API and worker. While running, a child that exits is restarted with back-off,
and an embedded server that dies is started again at the same address (both reported).
Order of stop, on Ctrl-C, SIGTERM or SIGHUP: children (whole process groups), then Valkey,
then PostgreSQL. A signal
during start-up takes effect when the current step is done (a second one at once); a second
signal while stopping kills the children at once. The servers are stopped either way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from booking import metrics, migrations
from booking.accounts.models import StaffRole
from booking.accounts.staff import authenticate, create_key
from booking.catalog.demo import DemoResult, load_demo
from booking.db import engine_scope, make_sessionmaker
from booking.keys import load_signing_keys
from booking.settings import Settings
from console.stack import EmbeddedPostgres, EmbeddedValkey, StackError, StackInfo
from console.supervisor import SUPERVISOR_FILE, Supervisor, child_env, python_module_argv

CONSOLE_KEY_FILE = "console.key"


class Interrupted(BaseException):
    """Start-up was interrupted by a stop signal. A BaseException, like KeyboardInterrupt,
    so that no library's ``except Exception`` swallows it."""


@dataclass(frozen=True)
class Prepared:
    demo: DemoResult
    console_key: str


async def prepare_database(database_url: str, data_dir: Path) -> Prepared:
    """Load the demo once and make sure the local console has a working admin key.

    The key's secret lives in ``<data>/console.key`` (owner-only); when that file is missing
    or its key no longer works (revoked, or a fresh database), a new key is made.
    """
    key_file = data_dir / CONSOLE_KEY_FILE
    async with engine_scope(database_url, pool_size=1, max_overflow=0) as engine:
        sessions = make_sessionmaker(engine)
        async with sessions() as session:
            demo = await load_demo(session)
        async with sessions() as session:
            secret = key_file.read_text().strip() if key_file.exists() else ""
            if not secret or await authenticate(session, secret) is None:
                issued = await create_key(session, f"local-console-{os.urandom(3).hex()}", StaffRole.ADMIN)
                secret = issued.secret
                key_file.unlink(missing_ok=True)
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secret + "\n")
            await session.commit()
    return Prepared(demo=demo, console_key=secret)


def metrics_folder(settings: Settings) -> Path:
    """The folder every child shares its metrics through, emptied for this run: the API's
    ``/metrics`` then adds up its processes' and the worker daemon's (``booking.metrics``).
    ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it, else ``<data>/metrics``."""
    chosen = metrics.multiprocess_dir()
    folder = Path(chosen) if chosen else settings.data_dir / metrics.DATA_FOLDER
    return metrics.empty_multiprocess_dir(folder.resolve())


def wait_until_healthy(url: str, stop: threading.Event, timeout: float = 90.0) -> bool:
    """Until the API at ``url`` is ready (``/ready`` answers 200: it reaches PostgreSQL and
    Redis, and the schema is migrated), ``stop`` is set, or ``timeout`` seconds pass.
    Returns whether it became ready. A 503 from ``/ready`` is an HTTPError: asked again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url + "/ready", timeout=3) as response:  # noqa: S310 - our own http URL
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.3)
    return False


class LocalStack:
    def __init__(self, settings: Settings, *, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.log = log
        self.stop_requested = threading.Event()
        self.phase = "starting"
        self.supervisor: Supervisor | None = None
        self.postgres = EmbeddedPostgres(settings.data_dir) if settings.uses_embedded_postgres else None
        self.valkey = EmbeddedValkey(settings.data_dir) if settings.uses_embedded_redis else None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        again = self.stop_requested.is_set()
        self.stop_requested.set()
        if self.phase == "starting":
            # Servers half-started by an interrupted step could be left running, so the
            # first signal waits for the current step; a second one forces the issue.
            if again:
                raise Interrupted(signal.Signals(signum).name)
            self.log("stopping once the current start-up step is done (signal again to force)")
            return
        if again and self.supervisor is not None:
            self.log("second stop signal: killing the children now")
            self.supervisor.kill()
        self.phase = "stopping"

    def _checkpoint(self) -> None:
        if self.stop_requested.is_set():
            raise Interrupted("stop requested during start-up")

    def _install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def run(self, on_ready: Callable[[StackInfo, Prepared], None]) -> int:
        """Run until a stop signal; returns the process exit code.

        Raises:
            StackError, sqlalchemy.exc.OperationalError, redis.exceptions.RedisError:
                a server could not be started or reached (after everything started is
                stopped again).
        """
        self._install_signals()
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.postgres:
                self.log("starting the embedded PostgreSQL")
            database_url = self.postgres.start() if self.postgres else settings.database_url
            self._checkpoint()
            if self.valkey:
                self.log("starting the embedded Valkey")
            redis_url = self.valkey.start() if self.valkey else settings.redis_url
            self._checkpoint()
            assert database_url is not None
            assert redis_url is not None
            self.log("migrating the database")
            migrations.upgrade(database_url)
            self._checkpoint()
            self.log("loading the demo data (first run only)")
            prepared = asyncio.run(prepare_database(database_url, settings.data_dir))
            load_signing_keys(settings)
            self._checkpoint()

            api_url = f"http://{settings.api_host}:{settings.api_port}"
            env = child_env(database_url, redis_url)
            env[metrics.MULTIPROC_ENV] = str(metrics_folder(settings))
            self.supervisor = Supervisor(
                env,
                log=self.log,
                status_file=settings.data_dir / SUPERVISOR_FILE,
            )
            self.supervisor.add(
                "api",
                python_module_argv(
                    "console",
                    "serve",
                    "--host",
                    settings.api_host,
                    "--port",
                    str(settings.api_port),
                    "--workers",
                    str(settings.api_workers),
                ),
            )
            for n in range(settings.worker_count):
                self.supervisor.add(f"worker-{n + 1}", python_module_argv("console", "worker"))
            self.log("starting the API and the worker")
            self.supervisor.start()
            info = StackInfo(database_url=database_url, redis_url=redis_url, api_url=api_url, pid=os.getpid())
            info.write(settings.data_dir)
            self.phase = "running"
            if wait_until_healthy(api_url, self.stop_requested):
                on_ready(info, prepared)
            elif not self.stop_requested.is_set():
                self.log(f"the API did not become healthy at {api_url}; see its output above")
                return 1
            while not self.stop_requested.wait(0.5):
                self._watch_servers()
                self.supervisor.poll()
            return 0
        except Interrupted:
            return 0
        finally:
            self.phase = "stopping"
            self._shutdown()

    def _watch_servers(self) -> None:
        """Start an embedded server again if it died. The children ride out the gap (the API
        answers 503 for what needs it, the worker waits) and reconnect by themselves."""
        for name, server in (("PostgreSQL", self.postgres), ("Valkey", self.valkey)):
            if server is None or self.stop_requested.is_set() or server.running():
                continue
            self.log(f"the embedded {name} is not running; starting it again")
            try:
                server.restart()
            except StackError as error:
                self.log(f"{error}; trying again in a moment")
            else:
                self.log(f"the embedded {name} is running again")

    def _shutdown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        StackInfo.remove(self.settings.data_dir)
        if self.valkey is not None:
            self.valkey.stop()
        if self.postgres is not None:
            self.postgres.stop()
