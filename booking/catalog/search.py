"""How fans find events: the filters they may give, the keyword match and its ranking, and
the search documents the keyword is matched against.

The keyword is matched two ways, and an event is found by either:

- full text: every word of the keyword, as a prefix (so "light" finds "Lights" and a fan
  typing "metal" already sees "Metallica"), against the event's weighted document. A word
  that nothing starts with is taken as a typo and also matches the catalog's name words
  (titles, performers, venue names, cities) one edit from it, two for words of eight or
  more letters: "hamlte" matches as "hamlte:* | hamlet";
- trigrams (pg_trgm): the keyword is similar to part of the title or performer at the
  server's ``word_similarity_threshold`` (0.6 by default), which also finds long names
  with more typos than that ("philharmonnikk").

Short words have too few trigrams to survive an edit (two neighbours swapped in "aurora"
leave it three of its seven), which is why typos are corrected by edit distance against a
dictionary (``search_words``) rather than by a lower similarity threshold: over the demo
catalog, a threshold low enough to find two-edit typos by trigrams alone (0.4) starts
matching random letter strings, while the dictionary finds them and matches none.

The score adds the two: ``ts_rank`` with PostgreSQL's default weights (A 1.0, B 0.4, C 0.2)
and the trigram word similarity (0..1, near 1 only for the names). A title or performer match
therefore ranks above a venue or city match, which ranks above a description-only match, and
a corrected word ranks as the word it was corrected to.

The ``simple`` text-search configuration is deliberate: the catalog mixes languages (English,
German, Irish names), and a stemmer for one language mangles names in the others; prefix
matching covers plurals and type-ahead instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Float,
    Numeric,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSQUERY
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import Category, Event, EventSearch, EventStatus, PriceTier, Venue
from booking.errors import InvalidRequest
from booking.outbox import emit

# Outbox topic: an event, or the venue it is at, changed in a way search may show. Payload
# ``{"event_id": "<uuid>"}``. Consumers switch on this string, so it never changes.
EVENT_CHANGED = "event.changed"

MAX_KEYWORD_LENGTH = 200
# More words than this add nothing to a fan's search but cost the planner.
MAX_KEYWORD_WORDS = 10
MAX_CITY_LENGTH = 120
# Prices are bigint minor units; bounding them keeps a typo from overflowing the column type.
MAX_PRICE_MINOR = 10**12
DEFAULT_RADIUS_KM = 50.0
# Half the Earth's circumference: every point is within it.
MAX_RADIUS_KM = 20_040.0
EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE_LATITUDE = 111.0
# Dates outside these years are typos; refusing them keeps every bound (and the one-day
# slack added below) inside what both Python and PostgreSQL can represent.
FIRST_YEAR, LAST_YEAR = 1900, 2999

_WORD = re.compile(r"[^\W_]+")

# One statement writes the documents and adds their name words to the dictionary, so a
# document is never searchable without its words being correctable. The words are the
# lexemes of weights A and B (title, performer, venue name, city) of 4 to 32 letters with no
# digit or punctuation: shorter words are never corrected, and numbers and compounds
# ("patel-okafor", whose parts are words of their own) are nobody's typo. They are inserted in
# order so that two refreshes adding the same new words wait for each other, never deadlock.
_REFRESH_SQL = """
    WITH written AS (
        INSERT INTO event_search (event_id, document, names, refreshed_at)
        SELECT e.id,
               setweight(to_tsvector('simple'::regconfig, e.title || ' ' || e.performer), 'A')
               || setweight(to_tsvector('simple'::regconfig, v.name || ' ' || e.city), 'B')
               || setweight(to_tsvector('simple'::regconfig, e.description), 'C'),
               lower(e.title || ' ' || e.performer),
               now()
        FROM events e JOIN venues v ON v.id = e.venue_id
        {where}
        ON CONFLICT (event_id) DO UPDATE
        SET document = excluded.document, names = excluded.names, refreshed_at = excluded.refreshed_at
        RETURNING document
    ),
    words AS (
        SELECT DISTINCT word
        FROM written, unnest(tsvector_to_array(ts_filter(document, ARRAY['a', 'b']::"char"[]))) AS word
        WHERE length(word) BETWEEN 4 AND 32 AND word !~ '[[:digit:][:punct:]]'
    ),
    added AS (
        INSERT INTO search_words (word) SELECT word FROM words ORDER BY word ON CONFLICT (word) DO NOTHING
    ){prune}
    SELECT count(*) FROM written
"""

# Only a refresh of every document knows which words no document has any more.
_PRUNE_SQL = """,
    pruned AS (
        DELETE FROM search_words WHERE word NOT IN (SELECT word FROM words)
    )"""


async def refresh_search_documents(session: AsyncSession, event_ids: Collection[uuid.UUID]) -> int:
    """Rewrite the search documents of ``event_ids`` from the events and venues as they are
    now, and add their name words to the dictionary typos are corrected against, in the
    caller's transaction (the caller commits). Returns how many documents were written.

    Idempotent, and safe to run late or twice: it always writes the current state, so
    refreshes delivered out of order still end at the truth. Ids of events that no longer
    exist are skipped (their documents went with them, by cascade). Words the old documents
    had are left in the dictionary (another event may still use them) until the next full
    refresh.
    """
    if not event_ids:
        return 0
    result = await session.execute(
        text(_REFRESH_SQL.format(where="WHERE e.id = ANY(:ids)", prune="")), {"ids": list(event_ids)}
    )
    return int(result.scalar_one())


async def refresh_all_search_documents(session: AsyncSession) -> int:
    """Rewrite every event's search document (after a bulk load) and make the dictionary
    exactly their name words; the caller commits. Returns how many documents were written."""
    result = await session.execute(text(_REFRESH_SQL.format(where="", prune=_PRUNE_SQL)))
    return int(result.scalar_one())


async def emit_event_changed(session: AsyncSession, event_id: uuid.UUID) -> None:
    """Record, in the caller's transaction, that ``event_id`` needs its search document
    refreshed. Whoever changes an event's title, performer, description or city, or its
    venue's name, calls this for each affected event."""
    await emit(session, EVENT_CHANGED, {"event_id": str(event_id)}, catalog_event_id=event_id)


@dataclass(frozen=True)
class Keyword:
    """A fan's keyword, cleaned: ``text`` for trigram similarity, ``words`` for full text
    (each a prefix, or a catalog word it is a typo of)."""

    text: str
    words: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str | None) -> Keyword | None:
        """None for a missing or blank keyword (a search form's empty box means "anything").

        Raises:
            InvalidRequest: too long, or no letter or digit to search for.
        """
        if raw is None or not raw.strip():
            return None
        if len(raw) > MAX_KEYWORD_LENGTH:
            raise InvalidRequest(f"q is at most {MAX_KEYWORD_LENGTH} characters.")
        words = _WORD.findall(raw.lower())[:MAX_KEYWORD_WORDS]
        if not words:
            raise InvalidRequest("q needs at least one letter or digit to search for.")
        # Only letters and digits reach to_tsquery, so no input can break its syntax.
        return cls(text=" ".join(words), words=tuple(words))

    def matches(self) -> ColumnElement[bool]:
        """Full-text or trigram match; both operators are served by GIN indexes."""
        return or_(
            EventSearch.document.bool_op("@@")(self._query),
            literal(self.text).bool_op("<%")(EventSearch.names),
        )

    def score(self) -> ColumnElement[float]:
        """Relevance, rounded to six places so it survives a round trip through a cursor
        exactly; ties are broken by start time and id, never by float noise."""
        raw = func.ts_rank(EventSearch.document, self._query) + func.word_similarity(
            literal(self.text), EventSearch.names
        )
        return cast(func.round(cast(raw, Numeric), 6), Float)

    @functools.cached_property
    def _query(self) -> ColumnElement[object]:
        """Every word as a prefix, or as one of the catalog words it is a typo of: one
        subquery for all the words, built once per keyword so that the match and the score
        render the same SQL."""
        return _TSQUERY.bindparams(words=list(self.words)).scalar_subquery()


# The full-text query for a keyword's words, in one subquery: each word becomes
# "(word:* | 'correction' | ...)" and the words are AND-ed, then to_tsquery parses the
# whole; a word without corrections is "(word:*)", which parses as "word:*" does.
#
# A word gets corrections only when nothing in any document starts with it, so a word the
# catalog knows (or one still being typed) is never "corrected" into other events' words, and
# a keyword without typos gives exactly the query it always gave. A correction is a
# dictionary word (``search_words``) of 4 to 7 letters one edit away (a letter added,
# dropped, replaced, or two neighbours swapped), or of 8 or more letters two edits away;
# keyword words of fewer than 3 letters (a 4-letter word with one letter dropped is the
# shortest typo) or more than 32 (the longest dictionary word; longer ones get no deletion
# keys) are never corrected. The deletion keys of ``search_word_keys`` (migration 0011) are
# built for exactly these distances: change them together.
#
# Candidates share a deletion key with the word (a GIN index lookup, not a scan of the
# dictionary); fuzzystrmatch then confirms the distance. Levenshtein counts an adjacent swap
# as two edits, so a candidate one edit closer to the word with some neighbouring pair
# swapped also counts, as the optimal string alignment distance would. The swap positions
# run to a constant so that the planner knows the series is short. Dictionary words have
# no punctuation, and are quoted besides, so they cannot break the tsquery syntax.
_TSQUERY_SQL = """
    SELECT to_tsquery('simple'::regconfig, string_agg(term, ' & ' ORDER BY position))
    FROM (
        SELECT typed.position, '(' || typed.word || ':*' || coalesce(' | ' || (
            SELECT string_agg(quote_literal(candidate.word), ' | ')
            FROM search_words AS candidate,
                 LATERAL (SELECT CASE WHEN length(candidate.word) >= 8 THEN 2 ELSE 1 END) AS allowed (edits)
            WHERE length(typed.word) BETWEEN 3 AND 32
              AND search_word_keys(candidate.word) && search_word_keys(typed.word)
              AND (
                  levenshtein_less_equal(typed.word, candidate.word, allowed.edits) <= allowed.edits
                  OR EXISTS (
                      SELECT FROM generate_series(1, 32) AS i
                      WHERE i < length(typed.word)
                        AND levenshtein_less_equal(
                                overlay(
                                    typed.word
                                    PLACING substr(typed.word, i + 1, 1) || substr(typed.word, i, 1)
                                    FROM i FOR 2
                                ),
                                candidate.word,
                                allowed.edits - 1
                            ) <= allowed.edits - 1
                  )
              )
              AND NOT EXISTS (
                  SELECT FROM event_search AS known
                  WHERE known.document @@ to_tsquery('simple'::regconfig, typed.word || ':*')
              )
        ), '') || ')' AS term
        FROM unnest(CAST(:words AS text[])) WITH ORDINALITY AS typed (word, position)
    ) AS terms
    """
_TSQUERY = (
    text(_TSQUERY_SQL).bindparams(bindparam("words", type_=ARRAY(Text))).columns(column("query", TSQUERY))
)


@dataclass(frozen=True)
class Bound:
    """One end of a date range. ``at`` is aware for an instant, naive for a wall-clock time at
    the event's venue (what a fan means by a bare date or time)."""

    at: dt.datetime
    inclusive: bool

    @classmethod
    def parse(cls, name: str, raw: str | None, *, upper: bool) -> Bound | None:
        """Parse an ISO date or datetime. A date as the upper end means the whole of that day.

        Raises:
            InvalidRequest: not an ISO date or datetime, or outside the years we sell for.
        """
        if raw is None or not raw.strip():
            return None
        value = raw.strip()
        parsed: dt.date | dt.datetime
        try:
            parsed = dt.date.fromisoformat(value)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                raise InvalidRequest(
                    f"{name} must be an ISO date (2026-12-31) or datetime (2026-12-31T19:30 or "
                    f"2026-12-31T19:30:00+00:00); got {value[:40]!r}."
                ) from None
        if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
            raise InvalidRequest(f"{name} must be between the years {FIRST_YEAR} and {LAST_YEAR}.")
        if isinstance(parsed, dt.datetime):
            return cls(at=parsed, inclusive=True)
        start = dt.datetime.combine(parsed, dt.time())
        if upper:
            return cls(at=start + dt.timedelta(days=1), inclusive=False)
        return cls(at=start, inclusive=True)


@dataclass(frozen=True)
class Near:
    latitude: float
    longitude: float
    radius_km: float

    def distance_km(self) -> ColumnElement[float]:
        """Great-circle (haversine) distance from the venue."""
        lat1, lon1 = math.radians(self.latitude), math.radians(self.longitude)
        lat2, lon2 = func.radians(Venue.latitude), func.radians(Venue.longitude)
        half_chord = func.power(func.sin((lat2 - lat1) / 2), 2) + math.cos(lat1) * func.cos(
            lat2
        ) * func.power(func.sin((lon2 - lon1) / 2), 2)
        # least(): rounding can push the term a hair above 1, where asin() raises an error.
        return 2 * EARTH_RADIUS_KM * func.asin(func.sqrt(func.least(half_chord, 1.0)))

    def within(self) -> ColumnElement[bool]:
        # The latitude band is a cheap, index-friendly pre-filter; the distance decides.
        band = self.radius_km / KM_PER_DEGREE_LATITUDE
        return and_(
            Venue.latitude.between(self.latitude - band, self.latitude + band),
            self.distance_km() <= self.radius_km,
        )


def on_sale_now() -> ColumnElement[bool]:
    """Tickets can be bought right now: on sale and inside the window, by the database clock."""
    now = func.now()
    return and_(
        Event.status == EventStatus.ON_SALE, Event.onsale_starts_at <= now, now < Event.onsale_ends_at
    )


def _finite(name: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number.")
    return value


@dataclass(frozen=True)
class EventFilters:
    """What a fan narrows the catalog by. Every field is optional; all given ones must hold.

    Build it with ``parse`` from raw query values, or directly; either way it is validated.

    Raises (on construction):
        InvalidRequest: a value is out of range or the values contradict each other, with a
            detail that names the parameter.
    """

    keyword: Keyword | None = None
    starts_from: Bound | None = None
    starts_to: Bound | None = None
    city: str | None = None
    venue_id: uuid.UUID | None = None
    category: Category | None = None
    price_min: int | None = None
    price_max: int | None = None
    on_sale_now: bool | None = None
    near: Near | None = None

    @classmethod
    def parse(
        cls,
        *,
        q: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        city: str | None = None,
        venue_id: uuid.UUID | None = None,
        category: str | None = None,
        price_min: int | None = None,
        price_max: int | None = None,
        on_sale_now: bool | None = None,
        lat: float | None = None,
        lon: float | None = None,
        radius_km: float | None = None,
    ) -> EventFilters:
        """Filters from the values a fan typed (as the API's query string carries them).

        ``lat`` and ``lon`` go together; ``radius_km`` needs both and defaults to 50 km.

        Raises:
            InvalidRequest: see the class.
        """
        parsed_category: Category | None = None
        if category is not None and category.strip():
            try:
                parsed_category = Category(category.strip().lower())
            except ValueError:
                known = ", ".join(member.value for member in Category)
                raise InvalidRequest(f"Unknown category {category[:40]!r}; use one of: {known}.") from None
        lat, lon, radius_km = _finite("lat", lat), _finite("lon", lon), _finite("radius_km", radius_km)
        near: Near | None = None
        if (lat is None) != (lon is None):
            raise InvalidRequest("lat and lon go together: give both, or neither.")
        if lat is not None and lon is not None:
            near = Near(lat, lon, DEFAULT_RADIUS_KM if radius_km is None else radius_km)
        elif radius_km is not None:
            raise InvalidRequest("radius_km needs a point to measure from: give lat and lon too.")
        return cls(
            keyword=Keyword.parse(q),
            starts_from=Bound.parse("date_from", date_from, upper=False),
            starts_to=Bound.parse("date_to", date_to, upper=True),
            city=city.strip() if city is not None and city.strip() else None,
            venue_id=venue_id,
            category=parsed_category,
            price_min=price_min,
            price_max=price_max,
            on_sale_now=on_sale_now,
            near=near,
        )

    def __post_init__(self) -> None:
        if self.city is not None and len(self.city) > MAX_CITY_LENGTH:
            raise InvalidRequest(f"city is at most {MAX_CITY_LENGTH} characters.")
        # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the driver.
        if self.city is not None and "\x00" in self.city:
            raise InvalidRequest("city contains a NUL character.")
        for name, price in (("price_min", self.price_min), ("price_max", self.price_max)):
            if price is not None and not 0 <= price <= MAX_PRICE_MINOR:
                raise InvalidRequest(f"{name} is in minor units (cents, pence) from 0 to {MAX_PRICE_MINOR}.")
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise InvalidRequest("price_min is above price_max: nothing can cost that.")
        if self.near is not None:
            if not -90 <= self.near.latitude <= 90:
                raise InvalidRequest("lat is a latitude in degrees, from -90 to 90.")
            if not -180 <= self.near.longitude <= 180:
                raise InvalidRequest("lon is a longitude in degrees, from -180 to 180.")
            if not 0 < self.near.radius_km <= MAX_RADIUS_KM:
                raise InvalidRequest(f"radius_km is above 0 and at most {MAX_RADIUS_KM:g}.")
        if (
            self.starts_from is not None
            and self.starts_to is not None
            and _after(self.starts_from, self.starts_to)
        ):
            raise InvalidRequest("date_from is after date_to: the range is empty.")

    def clauses(self, *, with_category: bool = True) -> list[ColumnElement[bool]]:
        """WHERE clauses over ``events`` joined to ``venues`` (and to ``event_search`` when
        there is a keyword). ``with_category=False`` leaves the category out, for facets."""
        clauses: list[ColumnElement[bool]] = []
        if self.keyword is not None:
            clauses.append(self.keyword.matches())
        if self.starts_from is not None:
            clauses.append(_bound_clause(self.starts_from, upper=False))
        if self.starts_to is not None:
            clauses.append(_bound_clause(self.starts_to, upper=True))
        if self.city is not None:
            clauses.append(func.lower(Event.city) == self.city.lower())
        if self.venue_id is not None:
            clauses.append(Event.venue_id == self.venue_id)
        if with_category and self.category is not None:
            clauses.append(Event.category == self.category)
        if self.price_min is not None or self.price_max is not None:
            # Some tier of the event is in range: the fan can buy at that price.
            tier = select(PriceTier.id).where(PriceTier.event_id == Event.id)
            if self.price_min is not None:
                tier = tier.where(PriceTier.price_minor >= self.price_min)
            if self.price_max is not None:
                tier = tier.where(PriceTier.price_minor <= self.price_max)
            clauses.append(tier.exists())
        if self.on_sale_now is not None:
            clauses.append(on_sale_now() if self.on_sale_now else ~on_sale_now())
        if self.near is not None:
            clauses.append(self.near.within())
        return clauses

    def fingerprint(self) -> str:
        """A stable text of the filters, so a cursor can tell which search it belongs to."""
        return repr(self)


def _after(lower: Bound, upper: Bound) -> bool:
    """The range holds no instant. Mixing an instant with a venue-local time compares wall
    clocks: close enough to catch a swapped pair, and never wrong by more than a day."""
    a, b = lower.at, upper.at
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return a > b or (a == b and not upper.inclusive)


def _bound_clause(bound: Bound, *, upper: bool) -> ColumnElement[bool]:
    if bound.at.tzinfo is not None:
        if upper:
            return Event.starts_at <= bound.at if bound.inclusive else Event.starts_at < bound.at
        return Event.starts_at >= bound.at
    # A venue-local bound: compare the start as a wall clock in the event's own time zone.
    # No zone is a day away from UTC, so a one-day slack around the bound (read as UTC) is an
    # index-friendly pre-filter that never drops a match.
    local = func.timezone(Event.timezone, Event.starts_at)
    slack = dt.timedelta(days=1)
    as_utc = bound.at.replace(tzinfo=dt.UTC)
    if upper:
        wall = local <= bound.at if bound.inclusive else local < bound.at
        return and_(Event.starts_at < as_utc + slack, wall)
    return and_(Event.starts_at > as_utc - slack, local >= bound.at)
