"""Hot statements stay within what psycopg keeps parsed."""

from __future__ import annotations

import gc

import pytest

import booking.holds.service
import booking.idempotency
import booking.orders.service
import booking.payments.offline
import booking.payments.service
from booking.sqltext import MAX_CACHED_STATEMENT_LENGTH, HotStatement

MODULES = (
    booking.holds.service,
    booking.idempotency,
    booking.orders.service,
    booking.payments.offline,
    booking.payments.service,
)


def test_every_hot_statement_of_the_buying_path_is_kept_parsed() -> None:
    statements = [o for o in gc.get_objects() if isinstance(o, HotStatement)]
    assert len(statements) >= 10, f"the buying path's statements are made at import ({len(MODULES)} modules)"
    longest = max(statements, key=lambda s: len(s.text))
    assert len(longest.text) <= MAX_CACHED_STATEMENT_LENGTH


def test_a_statement_too_long_to_be_kept_parsed_is_refused_when_made() -> None:
    HotStatement("SELECT " + "1" * (MAX_CACHED_STATEMENT_LENGTH - 10))
    with pytest.raises(ValueError, match="parsed on every call"):
        HotStatement("SELECT " + "1" * MAX_CACHED_STATEMENT_LENGTH)
