"""One logging setup for every Boxoffice process: structlog in front, stdlib behind.

Every line, ours or a library's (uvicorn, granian, rq, SQLAlchemy, alembic), leaves through
one root handler on stderr with one shape: ``timestamp`` (UTC, ISO 8601), ``level``,
``logger``, ``event``, then whatever context is known — the request id, the fan, the hold,
the order, the RQ job. ``BOXOFFICE_LOG_FORMAT`` picks ``json`` (one object per line, for
collectors) or ``console`` (for people); unset, a terminal gets ``console`` and anything
else ``json``. ``BOXOFFICE_LOG_LEVEL`` sets the level (default ``info``).

Context is per request and per job. ``log_scope`` opens one (the API's request-id
middleware and the daemon's worker do), ``bind`` adds to it. The scope is one mutable
mapping behind a context variable rather than one context variable per key: Litestar
resolves sibling dependencies in child tasks, and a value bound there (the fan, by the
authentication dependency) must still reach the route's own lines. structlog's own
context variables are merged too, for code that binds with them directly.

Secrets never reach the output: ``redact`` replaces the value of every key that looks
secret with ``[redacted]`` (recursively), and masks credentials found inside text (bearer
tokens, staff keys, Stripe keys and client secrets, webhook secrets, passwords in URLs,
private-key PEM).
Tracebacks are rendered without local variables, which would otherwise carry request
bodies, passwords and card numbers.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import IO, Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from booking.settings import Settings

LogFormat = Literal["json", "console"]
REDACTED = "[redacted]"

# Parts of a key (lower case, "-" read as "_") whose value is a secret, wherever it appears.
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "card",
    "cvc",
    "cvv",
    "api_key",
    "apikey",
    "session",
    "signature",
    "signing_key",
    "private_key",
    "credential",
)

# Credentials with a recognisable shape, masked wherever they appear in text: a fan session
# token (bofan_), a staff key (bosk_), a Stripe secret or restricted key, a payment's client
# secret, a webhook signing secret, the credential of an "Authorization: Bearer" value, a
# private key in PEM.
_SECRET_TEXT = re.compile(
    r"\b(?:bofan|bosk)_[A-Za-z0-9_-]+"
    r"|\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+"
    r"|\b(?:pi|seti)_[A-Za-z0-9]+_secret_[A-Za-z0-9]+"
    r"|\bwhsec_[A-Za-z0-9+/=]+"
    r"|(?<=[Bb]earer )[A-Za-z0-9._~+/=-]+"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    re.DOTALL,
)
# The password of a URL (postgresql://user:password@host), e.g. in a settings repr.
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):[^@\s/]+@")

# Libraries whose INFO lines are per statement or per call: SQLAlchemy's carry SQL
# parameters (password hashes among them), Stripe's and httpx's every provider call,
# fontTools' every glyph of a ticket PDF. Their warnings still show.
QUIET_LOGGERS = ("sqlalchemy", "stripe", "httpx", "httpcore", "fontTools", "fpdf", "PIL")
# Loggers that servers and rq set a level on, or give a handler of their own, when they
# start (uvicorn's log_level, rq's work()): reset so that one configuration governs them all.
# Not the servers' access loggers: a server turns its access log off by cutting that logger
# off (uvicorn: no handler, no propagation), and re-attaching it would log every request.
SERVER_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.asgi",
    "granian",
    "rq",
    "rq.worker",
    "rq.scheduler",
)

_scope: ContextVar[dict[str, Any] | None] = ContextVar("boxoffice_log_scope", default=None)


def open_scope(**values: Any) -> Token[dict[str, Any] | None]:
    """Start a log context of its own (a request, a job) holding ``values``; every line
    logged until ``close_scope`` carries them. Returns the token ``close_scope`` takes."""
    return _scope.set(values)


def close_scope(token: Token[dict[str, Any] | None]) -> None:
    """End the scope ``token`` opened: what was bound in it is gone."""
    _scope.reset(token)


@contextmanager
def log_scope(**values: Any) -> Iterator[None]:
    """A log context for the block: lines logged inside carry ``values`` and whatever
    ``bind`` adds, lines after it none of them."""
    token = open_scope(**values)
    try:
        yield
    finally:
        close_scope(token)


def bind(**values: Any) -> None:
    """Add ``values`` to every later line of the current request or job (also to lines
    logged by the tasks it started). Outside a scope it does nothing: a job run inline by a
    command or a test must not label that process's later lines with its ids."""
    scope = _scope.get()
    if scope is not None:
        scope.update(values)


def merge_scope(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: the current scope's values, under what the line itself says."""
    scope = _scope.get()
    if scope:
        for key, value in scope.items():
            event_dict.setdefault(key, value)
    return event_dict


@functools.lru_cache(maxsize=2048)
def is_secret_key(key: str) -> bool:
    """Whether a value under ``key`` is a secret (a password, token, card, cookie...)."""
    lowered = key.lower().replace("-", "_")
    return any(part in lowered for part in SECRET_KEY_PARTS)


def scrub_text(text: str) -> str:
    """``text`` with every credential of a known shape replaced by ``[redacted]``."""
    if "_" not in text and "://" not in text and "earer " not in text and "-----BEGIN" not in text:
        return text  # nothing of a credential's shape: skip the expressions
    text = _SECRET_TEXT.sub(REDACTED, text)
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_key(key) else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: secret-looking keys get ``[redacted]`` for a value, at any depth, and
    credentials inside text are masked (see ``scrub_text``). Runs after the exception is
    rendered, so a secret in an exception message is masked too."""
    for key, value in event_dict.items():
        if is_secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str | Mapping | list | tuple):
            event_dict[key] = _redacted(value)
    return event_dict


_FIRST = ("timestamp", "level", "logger", "event")


def fields_in_order(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: the fields every line has first, in one order, then the line's own."""
    ordered = {key: event_dict.pop(key) for key in _FIRST if key in event_dict}
    ordered.update(event_dict)
    return ordered


def ids_as_text(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: UUIDs as their plain text. Requests bind the UUID objects they have, and
    pay for the text only when a line is written."""
    for key, value in event_dict.items():
        if isinstance(value, uuid.UUID):
            event_dict[key] = str(value)
    return event_dict


def choose_format(configured: LogFormat | None, stream: IO[str]) -> LogFormat:
    """``configured`` if set; else ``console`` for a terminal, ``json`` for anything else
    (a file, a pipe, a log collector)."""
    if configured is not None:
        return configured
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def process_stderr() -> IO[str]:
    """The process's own stderr: not a stand-in some code swapped into ``sys.stderr`` for a
    while (a command's output captured by its caller must not collect the process's logs)."""
    return sys.__stderr__ if sys.__stderr__ is not None else sys.stderr


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each line to ``process_stderr()`` as it is at the time."""

    def __init__(self) -> None:
        super().__init__(process_stderr())

    @property
    def stream(self) -> IO[str]:
        return process_stderr()

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


# Run for every line, structlog's and stdlib's alike, before it is rendered.
_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    merge_scope,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _renderer_chain(log_format: LogFormat, colors: bool) -> list[Processor]:
    if log_format == "json":
        return [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Structured tracebacks, without each frame's local variables.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            ids_as_text,
            redact,
            fields_in_order,
            structlog.processors.JSONRenderer(default=str),
        ]
    return [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        # A plain traceback as text, so that redact sees it before it is shown.
        structlog.processors.format_exc_info,
        ids_as_text,
        redact,
        structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback),
    ]


def configure_logging(log_format: LogFormat | None = None, level: str = "info") -> LogFormat:
    """Route every logger of this process through one structlog formatter on stderr, at
    ``level``, in ``log_format`` (None: by whether stderr is a terminal). Safe to call again
    (each process entry point does): the handler is replaced, not added twice. Returns the
    format chosen.

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    stderr = process_stderr()
    chosen = choose_format(log_format, stderr)
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # No ExtraAdder: libraries' extra fields (a job's arguments, uvicorn's coloured
            # copy of each message) would be written unredacted and add nothing.
            foreign_pre_chain=_SHARED,
            processors=_renderer_chain(chosen, colors=chosen == "console" and stderr.isatty()),
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.setLevel(logging.NOTSET)
        server.propagate = True
        for own in list(server.handlers):
            server.removeHandler(own)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    _route_structlog_to(structlog.stdlib.ProcessorFormatter.wrap_for_formatter)
    return chosen


def _plain_message(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    """Final processor before ``configure_logging``: the message alone, as a stdlib line."""
    extra = {key: event_dict[key] for key in ("exc_info", "stack_info") if key in event_dict}
    return (event_dict.pop("event"),), extra


def _route_structlog_to(final: Processor) -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            final,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before configure_logging (a job run inline by a
        # command) must still follow it afterwards.
        cache_logger_on_first_use=False,
    )


# Until an entry point configures logging, structlog's lines are plain stdlib lines, like any
# library's: a command that runs a job inline (`boxoffice queues drain`) keeps its stdout for
# its own output, where structlog's default would print.
_route_structlog_to(_plain_message)


def setup_logging(settings: Settings) -> LogFormat:
    """``configure_logging`` from ``BOXOFFICE_LOG_FORMAT`` and ``BOXOFFICE_LOG_LEVEL``."""
    return configure_logging(settings.log_format, settings.log_level)


def propagate_to_root(*names: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for a server that brings its own logging config
    (granian): ``names`` keep no handlers of their own and hand every line to the root
    logger, hence to the handler ``configure_logging`` installed."""
    return {
        "formatters": {},
        "handlers": {},
        "loggers": {name: {"handlers": [], "propagate": True} for name in names},
    }


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (``boxoffice.<area>``), for key-value lines."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
