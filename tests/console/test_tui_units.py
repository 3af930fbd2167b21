"""What a till types, read exactly: amounts in each currency's own minor unit."""

from __future__ import annotations

import pytest

from console.tui.modals import parse_amount


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("50", "EUR", 5000),
        ("50.5", "EUR", 5050),
        ("1,000.00", "GBP", 100000),
        ("5000", "JPY", 5000),
        ("1.250", "KWD", 1250),
        ("0", "EUR", 0),
    ],
)
def test_amounts_in_the_currencys_minor_unit(typed: str, currency: str, minor: int) -> None:
    assert parse_amount(typed, currency) == minor


@pytest.mark.parametrize(
    ("typed", "currency"),
    [
        ("", "EUR"),
        ("abc", "EUR"),
        ("-5", "EUR"),
        ("50.001", "EUR"),
        ("50.5", "JPY"),
        ("nan", "EUR"),
        ("inf", "EUR"),
        ("-inf", "EUR"),
        ("1e999999999", "EUR"),
        ("1e-999999999", "EUR"),
        ("²", "EUR"),
        ("10000000000", "EUR"),
    ],
)
def test_anything_else_is_not_an_amount(typed: str, currency: str) -> None:
    assert parse_amount(typed, currency) is None
