"""Venues, seating layouts and events: what can be sold, where and when."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default, state_enum, uuid_pk

CURRENCY_CHECK = "currency ~ '^[A-Z]{3}$'"


class EventStatus(enum.StrEnum):
    """Where an event is in its life, as far as people decide it. Whether tickets can be
    bought right now also depends on the on-sale window, which the database clock judges, so
    ``on_sale`` means "selling when the window is open", ``paused`` is an operator's stop and
    ``off_sale`` the organiser's. What fans see (scheduled, sold out, ended...) is derived
    from this, the times and the inventory: see ``booking.catalog.lifecycle``."""

    DRAFT = "draft"
    ON_SALE = "on_sale"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    OFF_SALE = "off_sale"


class Category(enum.StrEnum):
    MUSIC = "music"
    COMEDY = "comedy"
    THEATRE = "theatre"
    SPORTS = "sports"
    FAMILY = "family"
    CLASSICAL = "classical"
    FESTIVAL = "festival"
    TALK = "talk"


class Venue(Base):
    __tablename__ = "venues"
    __table_args__ = (
        CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude_range"),
        CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude_range"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300), server_default="")
    city: Mapped[str] = mapped_column(String(120))
    country: Mapped[str] = mapped_column(String(2))
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    timezone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = now_default()


class SeatingLayout(Base):
    """One way of arranging a venue (all-seated concert, in-the-round, standing floor...)."""

    __tablename__ = "seating_layouts"
    __table_args__ = (UniqueConstraint("venue_id", "name"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    venue_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = now_default()
    # The price tiers its rows and GA areas name, in the order an event lists them (a JSON
    # list of names; see booking.catalog.layouts).
    tiers: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))


class Section(Base):
    __tablename__ = "sections"
    __table_args__ = (UniqueConstraint("layout_id", "name"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    layout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("seating_layouts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    sort_order: Mapped[int] = mapped_column(Integer, server_default="0")
    # How a layout file placed its seats on the map (booking.catalog.layout_geometry's
    # SectionMap); None when their positions were given.
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class SeatRow(Base):
    __tablename__ = "seat_rows"
    __table_args__ = (UniqueConstraint("section_id", "label"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    section_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sections.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(16))
    sort_order: Mapped[int] = mapped_column(Integer, server_default="0")
    # The layout's price tier for this row's seats (one of its layout's ``tiers``).
    tier: Mapped[str | None] = mapped_column(String(120))
    # The row's own placing within its section's map (layout_geometry's RowMap); None when
    # its positions were given.
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Seat(Base):
    """A physical seat. ``x``/``y`` place it on the seat map (arbitrary units, origin top-left)."""

    __tablename__ = "seats"
    __table_args__ = (UniqueConstraint("row_id", "number"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    row_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("seat_rows.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(16))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    accessible: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # The seat's place in its row's numbering (which way the numbers run).
    sort_order: Mapped[int] = mapped_column(Integer, server_default="0")
    # Beside an accessible place, for the person who comes with its user.
    companion: Mapped[bool] = mapped_column(Boolean, server_default="false")
    restricted_view: Mapped[bool] = mapped_column(Boolean, server_default="false")


class GAArea(Base):
    """A general-admission area: unnamed places up to a capacity."""

    __tablename__ = "ga_areas"
    __table_args__ = (
        UniqueConstraint("layout_id", "name"),
        CheckConstraint("capacity > 0", name="capacity_positive"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    layout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("seating_layouts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    capacity: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str | None] = mapped_column(String(120))
    sort_order: Mapped[int] = mapped_column(Integer, server_default="0")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("onsale_starts_at < onsale_ends_at", name="onsale_window_ordered"),
        CheckConstraint("onsale_ends_at <= ends_at", name="onsale_ends_by_event_end"),
        CheckConstraint("starts_at < ends_at", name="event_window_ordered"),
        CheckConstraint("max_tickets_per_fan BETWEEN 1 AND 100", name="fan_cap_range"),
        CheckConstraint("hold_ttl_seconds BETWEEN 300 AND 600", name="hold_ttl_range"),
        Index("ix_events_starts_at", "starts_at"),
        Index("ix_events_city_starts_at", "city", "starts_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    performer: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    category: Mapped[Category] = mapped_column(state_enum(Category, "category"))
    venue_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("venues.id"), index=True)
    layout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("seating_layouts.id"))
    # The venue's city, copied so search filters and ranks on one table.
    city: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[dt.datetime]
    ends_at: Mapped[dt.datetime]
    onsale_starts_at: Mapped[dt.datetime]
    onsale_ends_at: Mapped[dt.datetime]
    status: Mapped[EventStatus] = mapped_column(
        state_enum(EventStatus, "status"), server_default=EventStatus.DRAFT.value
    )
    created_at: Mapped[dt.datetime] = now_default()
    # This event's own per-fan cap and hold lifetime; None: the configured ones. The claim
    # statement reads them from this row, so they cost a hold nothing.
    max_tickets_per_fan: Mapped[int | None] = mapped_column(SmallInteger)
    hold_ttl_seconds: Mapped[int | None] = mapped_column(Integer)


class PriceTier(Base):
    """A price for some of an event's units. A GA tier names the area it sells."""

    __tablename__ = "price_tiers"
    __table_args__ = (
        UniqueConstraint("event_id", "name"),
        CheckConstraint("price_minor >= 0", name="price_not_negative"),
        CheckConstraint(CURRENCY_CHECK, name="currency_iso"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    ga_area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("ga_areas.id"))
    sort_order: Mapped[int] = mapped_column(Integer, server_default="0")


class EventSearch(Base):
    """An event's search document, derived from the event and its venue.

    Kept apart from ``events`` because it joins the venue (a generated column cannot) and
    because it may lag the event by seconds: it is rewritten by
    ``booking.catalog.search.refresh_search_documents``, which the outbox triggers after a
    change. Filters never read it; only matching and ranking on the keyword do.

    ``document`` weighs title and performer A, venue name and city B, description C.
    ``names`` is the lower-cased title and performer, for typo-tolerant trigram matching.
    """

    __tablename__ = "event_search"
    __table_args__ = (
        Index("ix_event_search_document", "document", postgresql_using="gin"),
        Index(
            "ix_event_search_names_trgm",
            "names",
            postgresql_using="gin",
            postgresql_ops={"names": "gin_trgm_ops"},
        ),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    document: Mapped[str] = mapped_column(TSVECTOR)
    names: Mapped[str] = mapped_column(Text)
    refreshed_at: Mapped[dt.datetime] = now_default()


class SearchWord(Base):
    """A word of some event's title, performer, venue name or city: what a misspelt keyword
    word may be corrected to.

    Invariant: holds every such word (four to 32 letters, no digits or punctuation) of every
    search document, because it is written in the same statement as the documents (see
    ``booking.catalog.search``). It may still hold words no document has any more, until the
    next full refresh prunes them; such a word only adds a correction that matches nothing.

    The GIN index is over ``search_word_keys(word)``, a function the migrations define: the
    word with one letter deleted in every way (two, from eight letters), so words an edit or
    two apart are found by their shared keys.
    """

    __tablename__ = "search_words"
    __table_args__ = (
        Index("ix_search_words_keys", func.search_word_keys(text("word")), postgresql_using="gin"),
    )

    word: Mapped[str] = mapped_column(Text, primary_key=True)
