"""booking.logs: the format a process picks, one shape for stdlib and structlog lines, the
scope that carries ids, and what redaction removes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

import pytest

from booking.logs import (
    REDACTED,
    bind,
    choose_format,
    configure_logging,
    get_logger,
    is_secret_key,
    log_scope,
    redact,
    scrub_text,
    setup_logging,
)
from booking.settings import Settings


@contextlib.contextmanager
def terminal() -> Iterator[tuple[IO[str], int]]:
    """A real terminal (a pseudo-terminal's slave end) to write to, and its master to read."""
    master, slave = os.openpty()
    stream = open(slave, "w", buffering=1)  # noqa: SIM115 - closed below
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def _read_until(master: int, marker: str, timeout: float = 10.0) -> str:
    """What a terminal shows, read until ``marker`` appears (a terminal hands it over in
    pieces)."""
    shown = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in shown and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            shown += os.read(master, 65536)
    return shown.decode()


def test_a_terminal_gets_console_and_anything_else_json() -> None:
    with terminal() as (tty, _):
        assert tty.isatty()
        assert choose_format(None, tty) == "console"
        assert choose_format("json", tty) == "json"
    read, write = os.pipe()
    with open(write, "w") as pipe, tempfile.TemporaryFile("w") as file:
        assert choose_format(None, pipe) == "json"
        assert choose_format(None, file) == "json"
        assert choose_format(None, io.StringIO()) == "json"
        assert choose_format("console", pipe) == "console"
    os.close(read)


def test_on_a_terminal_lines_are_for_people(monkeypatch: pytest.MonkeyPatch) -> None:
    with terminal() as (tty, master):
        monkeypatch.setattr(sys, "__stderr__", tty)
        assert setup_logging(Settings()) == "console"
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        get_logger("boxoffice.test").info("hold created", quantity=2)
        tty.flush()
        written = _read_until(master, "quantity")
    first, second = [line for line in written.splitlines() if line.strip()]
    for line in (first, second):
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "Started server process [42]" in first
    assert "uvicorn.error" in first
    assert "hold created" in second
    assert "quantity" in second


def test_elsewhere_every_line_is_json_of_one_shape(capfd: pytest.CaptureFixture[str]) -> None:
    assert configure_logging(None, "info") == "json"  # captured stderr is no terminal
    capfd.readouterr()
    logging.getLogger("rq.worker").info("default: %s (%s)", "jobs.x()", "job-1")
    get_logger("boxoffice.test").warning("payment failed", failure_code="card_declined")
    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT password_hash FROM fans")  # kept quiet
    get_logger("boxoffice.test").debug("below the level")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["default: jobs.x() (job-1)", "payment failed"]
    for line in lines:
        assert {"timestamp", "level", "logger", "event"} <= line.keys()
        assert line["timestamp"].endswith("Z")
    assert [(line["level"], line["logger"]) for line in lines] == [
        ("info", "rq.worker"),
        ("warning", "boxoffice.test"),
    ]


def test_the_level_comes_from_the_settings(capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging(Settings(log_format="json", log_level="warning"))
    capfd.readouterr()
    get_logger("boxoffice.test").info("quiet")
    logging.getLogger("alembic").info("quiet too")
    get_logger("boxoffice.test").warning("loud")
    assert [json.loads(line)["event"] for line in capfd.readouterr().err.splitlines()] == ["loud"]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("json", "chatty")


def test_a_scope_labels_its_lines_and_only_its_lines(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    capfd.readouterr()
    log = get_logger("boxoffice.test")
    bind(order_id="outside")  # no scope: nothing to label
    with log_scope(request_id="r-1"):
        bind(fan_id="f-1")
        log.info("inside")
        with log_scope(job_id="j-1"):
            log.info("nested")
        log.info("inside again", fan_id="said-here")
    log.info("after")
    lines = {line["event"]: line for line in map(json.loads, capfd.readouterr().err.splitlines())}
    assert (lines["inside"]["request_id"], lines["inside"]["fan_id"]) == ("r-1", "f-1")
    assert lines["nested"]["job_id"] == "j-1"
    assert "request_id" not in lines["nested"]
    assert lines["inside again"]["fan_id"] == "said-here"  # the line's own value wins
    assert lines["after"].keys() == {"event", "level", "logger", "timestamp"}


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "smtp_password",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "token",
        "token_secret",
        "Authorization",
        "Cookie",
        "set-cookie",
        "card_number",
        "cvc",
        "x-api-key",
        "session",
        "session_token",
        "Stripe-Signature",
        "ticket_signing_key",
    ],
)
def test_secret_keys_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["event", "hold_id", "order_id", "fan_id", "count", "level", "job_id"])
def test_ordinary_keys_are_left_alone(key: str) -> None:
    assert not is_secret_key(key)


def test_redaction_reaches_into_nested_values() -> None:
    event: dict[str, Any] = {
        "event": "payment",
        "hold_id": "h-1",
        "headers": {"authorization": "Bearer x", "accept": "application/json"},
        "body": {"card_number": "4242", "items": [{"cvc": "123", "seat": 7}], "password": {"a": 1}},
        "attempts": [{"api_key": "k"}, "plain"],
        "count": 3,
    }
    assert redact(None, "info", event) == {
        "event": "payment",
        "hold_id": "h-1",
        "headers": {"authorization": REDACTED, "accept": "application/json"},
        "body": {"card_number": REDACTED, "items": [{"cvc": REDACTED, "seat": 7}], "password": REDACTED},
        "attempts": [{"api_key": REDACTED}, "plain"],
        "count": 3,
    }


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("token bofan_Zx9-_q1 was refused", "bofan_Zx9-_q1"),
        ("staff key bosk_abcdefabcdef_s3cr3t", "bosk_abcdefabcdef_s3cr3t"),
        ("stripe said: invalid key sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("restricted rk_test_51Habc", "rk_test_51Habc"),
        ("webhook secret whsec_abc123XYZ", "whsec_abc123XYZ"),
        ("client_secret pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8", "YrKJUKribcBjcG8"),
        ("database_url='postgresql+psycopg://app:pa55word@db:5432/boxoffice'", "pa55word"),
        ("redis://:hunter2@cache:6379/0", "hunter2"),
        (
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIF\n-----END PRIVATE KEY-----",
            "MC4CAQAwBQYDK2VwBCIEIF",
        ),
    ],
)
def test_credentials_inside_text_are_masked(text: str, secret: str) -> None:
    assert secret not in scrub_text(text)
    assert REDACTED in scrub_text(text)


def test_text_without_credentials_is_unchanged() -> None:
    for text in ("hold created", "redis://127.0.0.1:6379/13", "GET /events?q=aurora", "sk_ in a word"):
        assert scrub_text(text) == text


def test_a_traceback_shows_no_local_variables_and_no_secret(capfd: pytest.CaptureFixture[str]) -> None:
    # Made at run time, so that no source line a traceback quotes holds them.
    password, card, token = ("correct horse " + "battery", "4000" * 4, "bofan_" + os.urandom(4).hex())
    for log_format in ("json", "console"):
        configure_logging(log_format, "info")  # type: ignore[arg-type]
        capfd.readouterr()

        def sign_in(password: str) -> None:
            card_number = card
            raise RuntimeError(f"refused {token} ({len(card_number)} digits)")

        try:
            sign_in(password)
        except RuntimeError:
            get_logger("boxoffice.test").exception("sign-in failed")
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        written = capfd.readouterr().err
        assert "sign-in failed" in written
        assert "Exception in ASGI application" in written
        assert "RuntimeError" in written
        for secret in (password, card, token):
            assert secret not in written, (log_format, written)


def test_before_any_setup_lines_are_plain_stderr_lines_like_a_librarys() -> None:
    """A command that runs a job inline never set logging up: its stdout stays its own."""
    code = (
        "from booking.logs import get_logger\n"
        "log = get_logger('boxoffice.jobs.holds')\n"
        "log.info('holds expired by the sweeper', count=3)\n"
        "log.warning('refund not paid back yet', refund_id='r-1', token='bofan_x')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    assert result.stderr == "refund not paid back yet\n"


def test_lines_go_to_the_process_stderr_not_a_swapped_in_stream(capfd: pytest.CaptureFixture[str]) -> None:
    """A command's output captured by its caller (a test runner, a wrapper) collects none
    of the process's log lines."""
    configure_logging("json", "info")
    capfd.readouterr()
    swapped = io.StringIO()
    with contextlib.redirect_stderr(swapped):
        get_logger("boxoffice.test").info("while stderr is swapped")
    assert swapped.getvalue() == ""
    assert json.loads(capfd.readouterr().err)["event"] == "while stderr is swapped"


def test_a_servers_access_log_left_off_stays_off() -> None:
    # uvicorn turns its access log off by cutting the logger off; setting up ours after it
    # (each API process does, in create_app) must not switch every request's line back on.
    access = logging.getLogger("uvicorn.access")
    before = access.propagate, list(access.handlers)
    # What uvicorn does with access_log=False: no handler of its own, no propagation.
    access.handlers = []
    access.propagate = False
    try:
        configure_logging("json", "info")
        assert access.propagate is False
        assert not access.hasHandlers()
    finally:
        access.propagate, access.handlers = before
