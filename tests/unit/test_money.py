"""Amounts in emails follow each currency's minor unit (ISO 4217)."""

from __future__ import annotations

import pytest

from booking.money import money


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (1250, "EUR", "12.50 EUR"),
        (5, "gbp", "0.05 GBP"),
        (1250, "JPY", "1250 JPY"),
        (1250, "KWD", "1.250 KWD"),
        (0, "USD", "0.00 USD"),
    ],
)
def test_money_uses_the_currencys_minor_unit(minor: int, currency: str, shown: str) -> None:
    assert money(minor, currency) == shown
