"""How people type tiers and prices (`console.tier_syntax`), for the CLI and the console."""

from __future__ import annotations

import pytest

from console.tier_syntax import (
    SyntaxProblem,
    parse_prices,
    parse_pricing,
    parse_tier,
    price_minor,
    price_text,
    suggested_tiers,
)


def test_a_tier_names_sections_rows_seats_and_an_area() -> None:
    assert parse_tier("Front=85.50@Stalls, row:Circle/A, seat:12", "GBP") == {
        "name": "Front",
        "price_minor": 8550,
        "sections": ["Stalls"],
        "rows": [{"section": "Circle", "row": "A"}],
        "seat_ids": [12],
    }
    assert parse_tier("Early=40@ga:Floor*200", "EUR") == {
        "name": "Early",
        "price_minor": 4000,
        "ga_area": "Floor",
        "quantity": 200,
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Front 85", "is not NAME=PRICE@WHAT"),
        ("Front=85.555@Stalls", "not a price in GBP"),
        ("Front=-1@Stalls", "not a price in GBP"),
        ("Front=ten@Stalls", "not a price"),
        ("Floor=40@ga:Floor*many", "takes a whole number"),
        ("Two=40@ga:A, ga:B", "one ga:AREA"),
        ("Seat=40@seat:twelve", "not a section"),
    ],
)
def test_what_is_not_a_tier_says_why(text: str, fragment: str) -> None:
    with pytest.raises(SyntaxProblem, match=fragment):
        parse_tier(text, "GBP")


def test_prices_round_trip_in_each_currencys_own_places() -> None:
    assert (price_minor("5000", "JPY"), price_text(5000, "JPY")) == (5000, "5000")
    assert (price_minor("12.5", "EUR"), price_text(1250, "EUR")) == (1250, "12.50")
    assert parse_prices("Premium=95; Standard=45.50", "GBP") == [
        {"tier": "Premium", "price_minor": 9500},
        {"tier": "Standard", "price_minor": 4550},
    ]


def test_pricing_is_tiers_or_the_layouts_own_tiers_never_both() -> None:
    assert parse_pricing("Lower=65; Upper=45", "GBP") == {"layout_prices": {"Lower": 6500, "Upper": 4500}}
    assert parse_pricing("All=10@Stalls", "GBP")["tiers"][0]["sections"] == ["Stalls"]
    with pytest.raises(SyntaxProblem, match="only the layout"):
        parse_pricing("Lower=65; All=10@Stalls", "GBP")


def test_the_suggestion_starts_from_the_layouts_tiers_or_its_places() -> None:
    assert suggested_tiers({"tiers": ["Premium", "Box"], "sections": ["Stalls"]}) == "Premium=0; Box=0"
    assert (
        suggested_tiers({"tiers": [], "sections": ["Stalls"], "ga_areas": ["Pit"]})
        == "Stalls=0@Stalls; Pit=0@ga:Pit"
    )
