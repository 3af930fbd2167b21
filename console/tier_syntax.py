"""How people type price tiers and prices, for the CLI and the console alike.

A tier is ``NAME=PRICE@WHAT[,WHAT...]``: the price in the currency's units (``85`` or
``85.00``), each WHAT a section name, ``row:SECTION/ROW``, ``seat:ID``, or ``ga:AREA``
(``ga:AREA*200`` for 200 of its places). Several tiers on one line are separated by ``;``.
A tier comes out as the staff API's tier object (``api.routes.catalog.TierIn`` as JSON).

Standard library only (and ``booking.money``): the CLI and the console load it at no cost.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from booking.money import minor_places


class SyntaxProblem(ValueError):
    """What was typed is not a tier or a price; the message says what was expected."""


def price_minor(text: str, currency: str) -> int:
    """``"85"`` or ``"85.00"`` GBP → 8500; ``"5000"`` JPY → 5000.

    Raises:
        SyntaxProblem: not an amount of that currency.
    """
    places = minor_places(currency)
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise SyntaxProblem(f"{text!r} is not a price") from None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal(1).scaleb(-places)):
        raise SyntaxProblem(f"{text!r} is not a price in {currency}")
    return int(value.scaleb(places))


def price_text(amount_minor: int, currency: str) -> str:
    """The inverse of ``price_minor``: 8500 GBP → ``85.00``."""
    places = minor_places(currency)
    return f"{Decimal(amount_minor).scaleb(-places):.{places}f}"


def parse_tier(text: str, currency: str) -> dict[str, Any]:
    """One tier (see the module's docstring) as the API's tier object.

    Raises:
        SyntaxProblem: not of that form.
    """
    name, eq, rest = text.partition("=")
    price, at, what = rest.partition("@")
    if not (eq and at and name.strip() and what.strip()):
        raise SyntaxProblem(f"{text.strip()!r} is not NAME=PRICE@WHAT")
    tier: dict[str, Any] = {"name": name.strip(), "price_minor": price_minor(price, currency)}
    for item in (part.strip() for part in what.split(",")):
        kind, colon, value = item.partition(":")
        if not colon or kind not in ("row", "seat", "ga"):
            tier.setdefault("sections", []).append(item)
        elif kind == "row" and "/" in value:
            section, _, row = value.rpartition("/")
            tier.setdefault("rows", []).append({"section": section.strip(), "row": row.strip()})
        elif kind == "seat" and value.strip().isdigit():
            tier.setdefault("seat_ids", []).append(int(value))
        elif kind == "ga" and "ga_area" not in tier:
            area, star, many = value.partition("*")
            tier["ga_area"] = area.strip()
            if star:
                if not many.strip().isdigit():
                    raise SyntaxProblem(f"{item!r}: ga:AREA*N takes a whole number")
                tier["quantity"] = int(many)
        else:
            raise SyntaxProblem(f"{item!r} is not a section, row:SECTION/ROW, seat:ID or one ga:AREA")
    return tier


def parse_tiers(text: str, currency: str) -> list[dict[str, Any]]:
    """Tiers separated by ``;``.

    Raises:
        SyntaxProblem.
    """
    tiers = [parse_tier(part, currency) for part in text.split(";") if part.strip()]
    if not tiers:
        raise SyntaxProblem("give at least one tier, NAME=PRICE@WHAT")
    return tiers


def parse_prices(text: str, currency: str) -> list[dict[str, Any]]:
    """``Premium=95; Standard=45.50`` as the API's prices: ``[{"tier", "price_minor"}]``.

    Raises:
        SyntaxProblem.
    """
    prices = []
    for part in (p for p in text.split(";") if p.strip()):
        name, eq, price = part.rpartition("=")
        if not eq or not name.strip():
            raise SyntaxProblem(f"{part.strip()!r} is not TIER=PRICE")
        prices.append({"tier": name.strip(), "price_minor": price_minor(price, currency)})
    if not prices:
        raise SyntaxProblem("give at least one TIER=PRICE")
    return prices


def parse_pricing(text: str, currency: str) -> dict[str, Any]:
    """An event's pricing as typed: tiers (``NAME=PRICE@WHAT; ...``), or prices for the tiers
    its layout declares (``NAME=PRICE; ...``, no ``@``): the API's ``tiers`` or
    ``layout_prices`` member.

    Raises:
        SyntaxProblem: neither form, or both mixed.
    """
    parts = [part for part in text.split(";") if part.strip()]
    if parts and not any("@" in part for part in parts):
        return {"layout_prices": {p["tier"]: p["price_minor"] for p in parse_prices(text, currency)}}
    if any("@" not in part for part in parts):
        raise SyntaxProblem("give every tier as NAME=PRICE@WHAT, or only the layout's tiers as NAME=PRICE")
    return {"tiers": parse_tiers(text, currency)}


def suggested_tiers(layout: dict[str, Any]) -> str:
    """A starting line for a layout (as ``GET /staff/catalog/venues`` lists it), at prices
    of 0 for the organiser to set: the tiers the layout declares, or else one tier per
    section and per GA area, named after it."""
    if layout.get("tiers"):
        return "; ".join(f"{name}=0" for name in layout["tiers"])
    parts = [f"{name}=0@{name}" for name in layout.get("sections", [])]
    parts += [f"{name}=0@ga:{name}" for name in layout.get("ga_areas", [])]
    return "; ".join(parts)
