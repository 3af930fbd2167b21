"""`boxoffice waiting-room` against the test database and Redis: setting a room, its status
with fans waiting, pause and resume with their audit rows, bad input as usage errors, and a
status that still answers when Redis is away."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.settings import get_settings
from booking.waiting_room import service as rooms
from tests.console.test_cli_ops import _event, audit_log, boxoffice, db, env, items, one_line_error, scalar
from tests.factories import make_fan

__all__ = ["env"]  # the fixture, shared with the holds and sale commands' tests


def _join(env: str, redis_url: str, event_id: uuid.UUID, fans: int) -> None:
    async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
        redis = Redis.from_url(redis_url)
        key = Ed25519PrivateKey.generate()
        try:
            async with sessions() as session:
                for _ in range(fans):
                    fan_id = await make_fan(session)
                    await rooms.join(session, redis, event_id, fan_id, signing_key=key)
                await session.commit()
        finally:
            await redis.aclose()

    db(env, work)


def test_set_then_status_shows_fans_waiting(env: str, redis_url: str) -> None:
    event, slug = db(env, _event)
    assert boxoffice("waiting-room", "status").exit_code == 3

    made = boxoffice("waiting-room", "set", slug, "--enable", "--rate", "120", "--window", "5", "--json")
    assert made.exit_code == 0, made.output
    room = json.loads(made.stdout)
    assert (room["enabled"], room["rate_per_minute"], room["window_seconds"]) == (True, 120, 300)
    (entry,) = audit_log(env)
    assert (entry.actor_type, entry.action, entry.outcome, entry.target_id) == (
        "cli",
        "waiting_room.set",
        "ok",
        str(event.event_id),
    )

    _join(env, redis_url, event.event_id, 3)
    (row,) = items(boxoffice("waiting-room", "status", slug, "--json"))
    assert (row["depth"], row["redis_ok"], row["settings"]["event_id"]) == (3, True, str(event.event_id))
    table = boxoffice("waiting-room", "status")
    assert table.exit_code == 0, table.output
    assert str(event.event_id) in table.stdout
    assert "120/min" in table.stdout


def test_pause_asks_first_then_pauses_once_and_resume_admits_again(env: str) -> None:
    event, slug = db(env, _event)
    paused = "SELECT paused FROM waiting_rooms WHERE event_id = :e"
    one_line_error(boxoffice("waiting-room", "pause", slug, "--yes"), 1, "waiting room")
    assert boxoffice("waiting-room", "set", slug, "--enable").exit_code == 0

    one_line_error(boxoffice("waiting-room", "pause", slug), 2, "refusing without --yes")
    assert scalar(env, paused, e=event.event_id) is False
    done = boxoffice("waiting-room", "pause", slug, "--yes")
    assert done.exit_code == 0, done.output
    assert "paused" in done.stdout
    assert scalar(env, paused, e=event.event_id) is True
    one_line_error(boxoffice("waiting-room", "pause", slug, "--yes"), 1, "already paused")
    assert sorted((e.action, e.outcome) for e in audit_log(env, limit=2)) == [
        ("waiting_room.pause", "failed"),
        ("waiting_room.pause", "ok"),
    ]

    assert boxoffice("waiting-room", "resume", slug).exit_code == 0
    assert scalar(env, paused, e=event.event_id) is False


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--opens-at", "2027-01-01T10:00"), "no time zone"),
        (("--opens-at", "soon"), "not an ISO 8601 time"),
        (("--window", "0"), "--window"),
        (("--rate", "0"), "--rate"),
        (("--max-shoppers", "5", "--no-max-shoppers"), "not both"),
        ((), "nothing to set"),
    ],
)
def test_bad_settings_are_usage_errors_and_change_nothing(env: str, args: tuple[str, ...], said: str) -> None:
    _, slug = db(env, _event)
    result = boxoffice("waiting-room", "set", slug, *args)
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert scalar(env, "SELECT count(*) FROM waiting_rooms") == 0


def test_a_refused_setting_names_the_rule(env: str) -> None:
    _, slug = db(env, _event)
    one_line_error(
        boxoffice(
            "waiting-room",
            "set",
            slug,
            "--opens-at",
            "2030-01-02T00:00:00Z",
            "--sale-opens-at",
            "2030-01-01T00:00:00Z",
        ),
        1,
        "opens_at must not be after sale_opens_at",
    )
    assert scalar(env, "SELECT count(*) FROM waiting_rooms") == 0
    one_line_error(boxoffice("waiting-room", "status", "no-such-event"), 1, "No such event")


def test_status_says_redis_is_away_instead_of_failing(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, slug = db(env, _event)
    assert boxoffice("waiting-room", "set", slug, "--enable").exit_code == 0
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    (row,) = items(boxoffice("waiting-room", "status", "--json"))
    assert (row["redis_ok"], row["depth"]) == (False, 0)
    table = boxoffice("waiting-room", "status")
    assert table.exit_code == 0, table.output
    assert "Redis away" in table.stdout
    # Settings are PostgreSQL's: steering the room does not need Redis.
    assert boxoffice("waiting-room", "pause", slug, "--yes").exit_code == 0
