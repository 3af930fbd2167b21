"""The in-flight bound's Retry-After: longer when many were refused the second before."""

from __future__ import annotations

from api.overload import MAX_RETRY_AFTER_SECONDS, InFlightLimit


def test_retry_after_grows_with_the_last_seconds_refusals_and_falls_back() -> None:
    bound = InFlightLimit(10)
    assert {bound.retry_after(100.0 + n / 100) for n in range(35)} == {1}  # a quiet second before
    assert bound.retry_after(101.2) == 4  # 35 refused in the second before: 1 + 35 // 10
    assert bound.retry_after(103.5) == 1  # a second with none in between


def test_retry_after_is_capped() -> None:
    bound = InFlightLimit(2)
    for n in range(500):
        bound.retry_after(7.0 + n / 1000)
    assert bound.retry_after(8.0) == MAX_RETRY_AFTER_SECONDS
