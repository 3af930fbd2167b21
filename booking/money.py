"""Amounts for people: integer minor units shown in each currency's own unit."""

from __future__ import annotations

# ISO 4217 currencies whose minor unit is the unit itself (no decimals), or a thousandth.
_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW"}
    | {"PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMAL = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})


def minor_places(currency: str) -> int:
    """How many decimal places the currency's minor unit has (2 for EUR, 0 for JPY)."""
    code = currency.upper()
    return 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2


def money(amount_minor: int, currency: str) -> str:
    """``1250, "EUR"`` → ``12.50 EUR``; ``1250, "JPY"`` → ``1250 JPY``."""
    places = minor_places(currency)
    return f"{amount_minor / 10**places:.{places}f} {currency.upper()}"
