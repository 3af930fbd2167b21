"""`boxoffice holds|orders|sale` against the test database: output for people and `--json`,
exit codes, refusing destructive acts without `--yes` when there is no terminal (CliRunner's
stdin is not one), the change in the database, and its audit row."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import Result as CliResult
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from booking.db import engine_scope, make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.ops import audit
from booking.payments import offline
from booking.payments import service as payments
from booking.payments.offline import OfflineGateway
from booking.settings import get_settings
from console.cli import app
from tests.factories import SmallEvent, advance_clock, make_event, make_fan

POLICY = HoldPolicy()
runner = CliRunner()
T = TypeVar("T")


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")  # tables wide enough to keep ids on one line
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def db(url: str, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run ``work`` on the test database from this (synchronous) test, as the CLI does."""

    async def run() -> T:
        async with engine_scope(url) as engine:
            return await work(make_sessionmaker(engine))

    return asyncio.run(run())


def boxoffice(*args: str) -> CliResult:
    return runner.invoke(app, list(args))


def items(result: CliResult) -> list[dict[str, Any]]:
    return list(json.loads(result.stdout)["items"])


async def _event(sessions: async_sessionmaker[AsyncSession]) -> tuple[SmallEvent, str]:
    async with sessions() as session:
        event = await make_event(session, seats=6, ga_capacity=2)
        slug = await session.scalar(text("SELECT slug FROM events WHERE id = :e"), {"e": event.event_id})
        return event, str(slug)


async def _hold(
    sessions: async_sessionmaker[AsyncSession], event: SmallEvent, seats: list[int], email: str | None = None
) -> tuple[Owner, uuid.UUID]:
    async with sessions() as session:
        owner = Owner(fan_id=await make_fan(session, email))
        view = await holds.create_hold(
            session,
            owner=owner,
            event_id=event.event_id,
            selection=SeatSelection(tuple(seats)),
            policy=POLICY,
        )
        await session.commit()
        return owner, view.id


async def _pay(
    sessions: async_sessionmaker[AsyncSession], owner: Owner, hold_id: uuid.UUID, card: str
) -> payments.Settlement:
    return await payments.checkout(
        sessions,
        gateway=OfflineGateway(sessions),
        owner=owner,
        hold_id=hold_id,
        method={"card_number": card},
        policy=POLICY,
    )


async def _clock(sessions: async_sessionmaker[AsyncSession], seconds: float) -> None:
    async with sessions() as session:
        await advance_clock(session, seconds)


def scalar(url: str, sql: str, **params: object) -> Any:
    async def read(sessions: async_sessionmaker[AsyncSession]) -> Any:
        async with sessions() as session:
            return await session.scalar(text(sql), params)

    return db(url, read)


def audit_log(url: str, limit: int = 1) -> list[audit.AuditView]:
    async def read(sessions: async_sessionmaker[AsyncSession]) -> list[audit.AuditView]:
        async with sessions() as session:
            return await audit.tail(session, limit=limit)

    return db(url, read)


def one_line_error(result: CliResult, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("boxoffice: "), result.output
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output


# --- holds -------------------------------------------------------------------------------


def test_holds_list_as_a_table_and_as_json(env: str) -> None:
    event, slug = db(env, _event)
    _, first = db(env, lambda s: _hold(s, event, event.seat_ids[:2], "Ann@example.org"))
    _, second = db(env, lambda s: _hold(s, event, event.seat_ids[2:3]))

    table = boxoffice("holds", "list")
    assert table.exit_code == 0, table.output
    assert str(first) in table.stdout
    assert "Ann@example.org" in table.stdout
    assert "100.00 GBP" in table.stdout

    listed = boxoffice("holds", "list", "--event", slug, "--json")
    assert listed.exit_code == 0, listed.output
    rows = items(listed)
    assert [row["hold_id"] for row in rows] == [str(second), str(first)]
    assert set(rows[1]) == {
        "hold_id",
        "event_id",
        "event_title",
        "owner_kind",
        "owner",
        "state",
        "quantity",
        "total_minor",
        "currency",
        "created_at",
        "expires_at",
        "seconds_left",
        "overdue",
    }
    assert (rows[1]["owner"], rows[1]["quantity"], rows[1]["state"]) == ("Ann@example.org", 2, "active")
    (ann,) = items(boxoffice("holds", "list", "--fan", "ann@EXAMPLE.org", "--json"))
    assert ann["hold_id"] == str(first)

    none = boxoffice("holds", "list", "--expired", "--json")
    assert none.exit_code == 3
    assert json.loads(none.stdout) == {"items": []}
    assert boxoffice("holds", "list", "--expired").exit_code == 3
    one_line_error(boxoffice("holds", "list", "--event", "no-such-event"), 1, "No such event")


def test_holds_release_one_asks_first_then_releases_and_audits(env: str) -> None:
    event, _ = db(env, _event)
    _, hold_id = db(env, lambda s: _hold(s, event, event.seat_ids[:2]))
    state = "SELECT state FROM holds WHERE id = :h"

    refused = boxoffice("holds", "release", str(hold_id))
    one_line_error(refused, 2, "refusing without --yes")
    assert scalar(env, state, h=hold_id) == "active"

    done = boxoffice("holds", "release", str(hold_id), "--yes")
    assert done.exit_code == 0, done.output
    assert f"released hold {hold_id}: 2 ticket(s)" in done.stdout
    assert scalar(env, state, h=hold_id) == "released"
    assert scalar(env, "SELECT count(*) FROM inventory_units WHERE state = 'held'") == 0
    (entry,) = audit_log(env)
    assert (entry.actor_type, entry.action, entry.outcome, entry.target_type, entry.target_id) == (
        "cli",
        "hold.release",
        "ok",
        "hold",
        str(hold_id),
    )
    assert entry.details["quantity"] == 2

    again = boxoffice("holds", "release", str(hold_id), "--yes")
    one_line_error(again, 1, "already ended")
    (entry,) = audit_log(env)
    assert (entry.outcome, entry.details["problem"]) == ("failed", "hold-already-ended")
    one_line_error(boxoffice("holds", "release", str(uuid.uuid4()), "--yes"), 1, "No such hold")
    assert boxoffice("holds", "release", "not-a-uuid", "--yes").exit_code == 2


def test_holds_release_needs_exactly_one_form(env: str) -> None:
    hold_id = str(uuid.uuid4())
    one_line_error(boxoffice("holds", "release", "--yes"), 2, "give a HOLD_ID")
    one_line_error(boxoffice("holds", "release", hold_id, "--expired", "--yes"), 2, "not both")
    one_line_error(boxoffice("holds", "release", hold_id, "--event", "x", "--yes"), 2, "not both")
    one_line_error(boxoffice("holds", "release", "--event", "x", "--yes"), 2, "give a HOLD_ID")


def test_holds_release_expired_of_an_event(env: str) -> None:
    event, slug = db(env, _event)
    db(env, lambda s: _hold(s, event, event.seat_ids[:1]))
    nothing_yet = boxoffice("holds", "release", "--event", slug, "--expired", "--json")
    assert nothing_yet.exit_code == 3, nothing_yet.output
    assert json.loads(nothing_yet.stdout) == {"event_id": str(event.event_id), "released": 0}

    db(env, lambda s: _clock(s, POLICY.ttl.total_seconds() + 1))
    db(env, lambda s: _hold(s, event, event.seat_ids[1:2]))
    one_line_error(boxoffice("holds", "release", "--event", slug, "--expired"), 2, "refusing without --yes")
    assert scalar(env, "SELECT count(*) FROM holds WHERE state = 'expired'") == 0

    done = boxoffice("holds", "release", "--event", slug, "--expired", "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"event_id": str(event.event_id), "released": 1}
    assert scalar(env, "SELECT count(*) FROM holds WHERE state = 'expired'") == 1
    assert scalar(env, "SELECT count(*) FROM holds WHERE state = 'active'") == 1
    (entry,) = audit_log(env)
    assert (entry.action, entry.outcome, entry.target_id, entry.details["released"]) == (
        "hold.release_expired",
        "ok",
        str(event.event_id),
        1,
    )
    assert boxoffice("holds", "release", "--expired", "--yes").exit_code == 3


# --- orders ------------------------------------------------------------------------------


def _stuck(env: str, event: SmallEvent, seats: list[list[int]]) -> list[uuid.UUID]:
    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[uuid.UUID]:
        ids = []
        for chosen in seats:
            owner, hold_id = await _hold(sessions, event, chosen, f"{uuid.uuid4().hex[:8]}@example.org")
            assert (await _pay(sessions, owner, hold_id, offline.LATE_SUCCESS)).result == "pending"
            ids.append(hold_id)
        await _clock(sessions, POLICY.payment_grace.total_seconds() + 1)
        return ids

    return db(env, work)


def test_orders_stuck_then_reconcile_one(env: str) -> None:
    event, _ = db(env, _event)
    none = boxoffice("orders", "stuck", "--json")
    assert none.exit_code == 3
    assert json.loads(none.stdout) == {"items": []}
    assert "No stuck orders." in boxoffice("orders", "stuck").stdout

    (hold_id,) = _stuck(env, event, [event.seat_ids[:1]])
    table = boxoffice("orders", "stuck")
    assert table.exit_code == 0, table.output
    assert str(hold_id) in table.stdout
    assert "50.00 GBP" in table.stdout
    (row,) = items(boxoffice("orders", "stuck", "--json"))
    assert (row["hold_id"], row["provider"], row["payment_state"], row["overdue"]) == (
        str(hold_id),
        "offline",
        "pending",
        True,
    )
    assert row["age_seconds"] >= 0

    settled = boxoffice("orders", "reconcile", str(hold_id), "--json")
    assert settled.exit_code == 0, settled.output
    body = json.loads(settled.stdout)
    assert (body["hold_id"], body["result"]) == (str(hold_id), "confirmed")
    assert scalar(env, "SELECT state FROM orders WHERE hold_id = :h", h=hold_id) == "confirmed"
    (entry,) = audit_log(env)
    assert (entry.actor_type, entry.action, entry.outcome, entry.target_id) == (
        "cli",
        "order.reconcile",
        "ok",
        str(hold_id),
    )
    assert entry.details["result"] == "confirmed"

    again = boxoffice("orders", "reconcile", str(hold_id))
    one_line_error(again, 1, "already succeeded")
    (entry,) = audit_log(env)
    assert entry.outcome == "failed"
    one_line_error(boxoffice("orders", "reconcile"), 2, "or --all")
    one_line_error(boxoffice("orders", "reconcile", str(hold_id), "--all"), 2, "or --all")


def test_orders_reconcile_all_asks_then_settles_each(env: str) -> None:
    event, _ = db(env, _event)
    assert boxoffice("orders", "reconcile", "--all", "--yes").exit_code == 3
    stuck = _stuck(env, event, [event.seat_ids[:1], event.seat_ids[1:2]])

    one_line_error(boxoffice("orders", "reconcile", "--all"), 2, "refusing without --yes")
    assert scalar(env, "SELECT count(*) FROM orders") == 0

    done = boxoffice("orders", "reconcile", "--all", "--yes", "--json")
    assert done.exit_code == 0, done.output
    results = items(done)
    assert sorted(r["hold_id"] for r in results) == sorted(map(str, stuck))
    assert all(r["settlement"]["result"] == "confirmed" and r["error"] is None for r in results)
    assert scalar(env, "SELECT count(*) FROM orders WHERE state = 'confirmed'") == 2
    entries = audit_log(env, limit=2)
    assert {(e.action, e.outcome) for e in entries} == {("order.reconcile", "ok")}
    assert boxoffice("orders", "reconcile", "--all", "--yes").exit_code == 3


def test_orders_refund_asks_then_refunds_once(env: str) -> None:
    event, _ = db(env, _event)

    async def bought(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
        owner, hold_id = await _hold(sessions, event, event.seat_ids[:2])
        order_id = (await _pay(sessions, owner, hold_id, offline.SUCCESS)).order_id
        assert order_id is not None
        return order_id

    order_id = db(env, bought)
    one_line_error(boxoffice("orders", "refund", str(order_id)), 2, "refusing without --yes")
    assert scalar(env, "SELECT state FROM orders") == "confirmed"

    done = boxoffice("orders", "refund", str(order_id), "--yes")
    assert done.exit_code == 0, done.output
    assert f"refunded order {order_id}: 100.00 GBP" in done.stdout
    assert scalar(env, "SELECT state FROM orders") == "refunded"
    assert scalar(env, "SELECT count(*) FROM refunds") == 1
    assert scalar(env, "SELECT count(*) FROM tickets WHERE state = 'valid'") == 0
    (entry,) = audit_log(env)
    assert (entry.action, entry.outcome, entry.target_type, entry.target_id) == (
        "order.refund",
        "ok",
        "order",
        str(order_id),
    )
    assert entry.details["refund_recorded"] is True

    one_line_error(boxoffice("orders", "refund", str(order_id), "--yes"), 1, "already refunded")
    one_line_error(boxoffice("orders", "refund", str(uuid.uuid4()), "--yes", "--json"), 1, "No such order")
    assert scalar(env, "SELECT count(*) FROM refunds") == 1


# --- sale --------------------------------------------------------------------------------


def test_sale_pause_and_resume_by_slug(env: str) -> None:
    event, slug = db(env, _event)
    status = "SELECT status FROM events WHERE id = :e"

    one_line_error(boxoffice("sale", "pause", slug), 2, "refusing without --yes")
    assert scalar(env, status, e=event.event_id) == "on_sale"

    paused = boxoffice("sale", "pause", slug, "--yes", "--json")
    assert paused.exit_code == 0, paused.output
    assert json.loads(paused.stdout) == {
        "event_id": str(event.event_id),
        "title": "Test Night",
        "previous": "on_sale",
        "status": "paused",
    }
    assert scalar(env, status, e=event.event_id) == "paused"
    assert scalar(env, "SELECT count(*) FROM outbox WHERE topic = 'event.changed'") == 1
    (entry,) = audit_log(env)
    assert (entry.actor_type, entry.action, entry.outcome, entry.target_id) == (
        "cli",
        "sale.pause",
        "ok",
        str(event.event_id),
    )

    one_line_error(boxoffice("sale", "pause", slug, "--yes"), 1, "event that is paused")
    (entry,) = audit_log(env)
    assert (entry.action, entry.outcome, entry.details["problem"]) == (
        "sale.pause",
        "failed",
        "sale-state-conflict",
    )

    resumed = boxoffice("sale", "resume", str(event.event_id))
    assert resumed.exit_code == 0, resumed.output
    assert "paused → on_sale" in resumed.stdout
    assert scalar(env, status, e=event.event_id) == "on_sale"
    one_line_error(boxoffice("sale", "resume", slug), 1, "event that is on_sale")
    one_line_error(boxoffice("sale", "pause", "no-such-event", "--yes"), 1, "No such event")


def test_an_unreachable_database_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    for args in (
        ("holds", "list"),
        ("orders", "stuck", "--json"),
        ("sale", "resume", "some-event"),
        ("orders", "reconcile", str(uuid.uuid4())),
    ):
        one_line_error(boxoffice(*args), 1, "cannot reach the database")


def test_no_database_configured_and_no_stack_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOXOFFICE_DATABASE_URL", raising=False)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    one_line_error(boxoffice("holds", "list"), 1, "no database")


def test_refunds_list_shows_what_is_not_paid_back_and_retry_sends_a_failed_one_again(env: str) -> None:
    event, _ = db(env, _event)

    async def bought(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
        owner, hold_id = await _hold(sessions, event, event.seat_ids[:2])
        order_id = (await _pay(sessions, owner, hold_id, offline.SUCCESS)).order_id
        assert order_id is not None
        return order_id

    order_id = db(env, bought)
    assert boxoffice("orders", "refund", str(order_id), "--yes").exit_code == 0
    listed = boxoffice("refunds", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = items(listed)
    assert (row["state"], row["order_id"]) == ("pending", str(order_id))
    # The provider kept refusing it: failed, with the error, for someone to look at.

    async def refused(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            await session.execute(
                text("UPDATE refunds SET state = 'failed', attempts = 8, last_error = 'Stripe answered 400'")
            )
            await session.commit()

    db(env, refused)
    table = boxoffice("refunds", "list", "--state", "failed")
    assert table.exit_code == 0, table.output
    assert "Stripe answered 400" in table.stdout
    assert row["id"] in table.stdout
    assert boxoffice("refunds", "list", "--state", "succeeded").exit_code == 3

    one_line_error(boxoffice("refunds", "retry", row["id"]), 2, "refusing without --yes")
    retried = boxoffice("refunds", "retry", row["id"], "--yes")
    assert retried.exit_code == 0, retried.output
    assert scalar(env, "SELECT state || ':' || attempts || ':' || retries FROM refunds") == "pending:0:1"
    one_line_error(boxoffice("refunds", "retry", row["id"], "--yes"), 1, "Only a failed refund")
    one_line_error(boxoffice("refunds", "retry", str(uuid.uuid4()), "--yes"), 1, "No such refund")
    actions = [(e.action, e.outcome) for e in audit_log(env, limit=10)]
    assert ("refund.retry", "ok") in actions
    assert ("refund.retry", "failed") in actions
