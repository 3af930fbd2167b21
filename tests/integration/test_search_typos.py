"""Typo tolerance of event search against real PostgreSQL: the rate over the demo catalog,
precision, and the dictionary of name words that typos are corrected against.

Every one-edit typo (adjacent swap, substitution by a neighbouring key or by any letter,
deletion, insertion) of every title and performer word of four or more letters is generated;
a deterministic sample of each kind keeps the run short. A typo counts as found when every
event the word belongs to is on the first page.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking import migrations
from booking.catalog import service
from booking.catalog.demo import EVENTS, load_demo
from booking.catalog.models import Event, SearchWord, Venue
from booking.catalog.search import EventFilters, refresh_all_search_documents, refresh_search_documents
from booking.db import engine_scope, make_sessionmaker
from tests.factories import make_event

_WORD = re.compile(r"[^\W_]+")
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
# Enough of each kind to measure its rate to within a few points (any-letter substitutions
# and insertions alone run to thousands), few enough to run in seconds.
_SAMPLE_PER_KIND = 150
_REQUIRED_RATE = 0.9


def _keyboard_neighbours() -> dict[str, str]:
    position = {key: (row, col) for row, keys in enumerate(_KEYBOARD_ROWS) for col, key in enumerate(keys)}
    return {
        key: "".join(
            other
            for other, (other_row, other_col) in position.items()
            if other != key and abs(other_row - row) <= 1 and abs(other_col - col) <= 1
        )
        for key, (row, col) in position.items()
    }


NEIGHBOURS = _keyboard_neighbours()


def _swaps(word: str) -> Iterator[str]:
    for i in range(len(word) - 1):
        yield word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _deletions(word: str) -> Iterator[str]:
    for i in range(len(word)):
        yield word[:i] + word[i + 1 :]


def _substitutions(word: str, letters: str | None = None) -> Iterator[str]:
    """Each letter replaced by each of ``letters``, or by its keyboard neighbours."""
    for i, char in enumerate(word):
        for other in letters or NEIGHBOURS.get(char, ""):
            yield word[:i] + other + word[i + 1 :]


def _insertions(word: str) -> Iterator[str]:
    for i in range(len(word) + 1):
        for letter in string.ascii_lowercase:
            yield word[:i] + letter + word[i:]


def _name_words() -> dict[str, set[str]]:
    """Title and performer words of 4+ letters -> the slugs of the events that have them."""
    words: dict[str, set[str]] = defaultdict(set)
    for event in EVENTS:
        for word in _WORD.findall(f"{event.title} {event.performer}".lower()):
            if len(word) >= 4:
                words[word].add(event.slug)
    return words


def typo_queries() -> dict[str, list[tuple[str, str]]]:
    """Kind of edit -> (typo, the word it was made from), the same on every run."""
    kinds: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for word in _name_words():
        generators = {
            "swap": _swaps(word),
            "deletion": _deletions(word),
            "neighbour substitution": _substitutions(word),
            "any substitution": _substitutions(word, string.ascii_lowercase),
            "insertion": _insertions(word),
        }
        for kind, typos in generators.items():
            kinds[kind].update((typo, word) for typo in typos if typo != word)
    rng = random.Random(20261203)
    return {
        kind: sorted(pairs) if len(pairs) <= _SAMPLE_PER_KIND else rng.sample(sorted(pairs), _SAMPLE_PER_KIND)
        for kind, pairs in kinds.items()
    }


async def _slugs(session: AsyncSession, q: str) -> list[str]:
    page = await service.list_events(session, EventFilters.parse(q=q))
    return [item.slug for item in page.items]


async def _find(session: AsyncSession, q: str) -> list[uuid.UUID]:
    page = await service.list_events(session, EventFilters.parse(q=q))
    return [item.id for item in page.items]


@pytest.fixture
async def demo(session: AsyncSession) -> AsyncSession:
    await load_demo(session)
    return session


def test_the_generated_typos_are_many_and_one_edit_away() -> None:
    queries = typo_queries()
    assert sum(len(pairs) for pairs in queries.values()) >= 500
    assert len(queries) == 5
    for kind, pairs in queries.items():
        assert len(pairs) == _SAMPLE_PER_KIND, kind
        for typo, word in pairs:
            assert typo != word
            assert abs(len(typo) - len(word)) <= 1


async def test_typos_find_their_event_first(demo: AsyncSession) -> None:
    examples = {
        "aruora": "aurora-lights-london",
        "auorra": "aurora-lights-london",
        "hamlte": "hamlet-dublin",
        "mahelr": "london-philharmonic-mahler",
        "Mahlr": "london-philharmonic-mahler",
        "gruffallo": "the-gruffalo-dublin",
        "nachtwrek": "nachtwerk-berlin",
        "quin": "mara-quinn-manchester",
        "lnea brandt": "kabarett-berlin",
        "aurora lihgts": "aurora-lights-london",
        "hamlet riversdie": "hamlet-dublin",
        # Two edits in a word of eight letters or more.
        "resurektion": "london-philharmonic-mahler",
        "phlharmonik": "london-philharmonic-mahler",
        # Venue names and cities are corrected too.
        "kulturhale nachtwerk": "nachtwerk-berlin",
        "manchestr late": "late-laughs-manchester",
    }
    firsts = {typo: (await _slugs(demo, typo))[:1] for typo in examples}
    assert firsts == {typo: [slug] for typo, slug in examples.items()}


async def test_one_edit_typos_of_title_and_performer_words_find_their_event(demo: AsyncSession) -> None:
    owners = _name_words()
    queries = typo_queries()
    rates: dict[str, float] = {}
    missed: dict[str, list[str]] = defaultdict(list)
    for kind, pairs in queries.items():
        for typo, word in pairs:
            if not owners[word] <= set(await _slugs(demo, typo)):
                missed[kind].append(typo)
        rates[kind] = 1 - len(missed[kind]) / len(pairs)
    overall = 1 - sum(len(typos) for typos in missed.values()) / sum(len(pairs) for pairs in queries.values())
    report = {kind: (round(rate, 3), missed[kind][:10]) for kind, rate in rates.items()}
    assert overall >= _REQUIRED_RATE, report
    assert all(rate >= _REQUIRED_RATE for rate in rates.values()), report


def _expected_top(field: str) -> dict[str, str]:
    """Exact title (or performer) -> the event an exact search puts first, as it did before
    typos were corrected: the one with that name, or the soonest of those sharing it (equal
    scores fall back to the start time)."""
    expected: dict[str, str] = {}
    for event in sorted(EVENTS, key=lambda e: e.days_ahead, reverse=True):
        expected[getattr(event, field)] = event.slug
    return expected


async def test_exact_titles_and_performers_keep_their_top_result(demo: AsyncSession) -> None:
    for field in ("title", "performer"):
        tops = {name: (await _slugs(demo, name))[:1] for name in _expected_top(field)}
        assert tops == {name: [slug] for name, slug in _expected_top(field).items()}, field


async def test_non_words_and_two_edit_typos_of_short_words_find_nothing(demo: AsyncSession) -> None:
    rng = random.Random(7)
    noise = [
        "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9))) for _ in range(150)
    ]
    # "hxmlxt" and "aaroxa" are two edits from "hamlet" and "aurora": too far for six letters.
    chosen = ["qzxv", "blorft", "zzzyzzx", "grimbly", "plumbus", "frobnicate", "hxmlxt", "aaroxa"]
    found = {q: slugs for q in chosen + noise if (slugs := await _slugs(demo, q))}
    assert found == {}


async def test_a_word_the_catalog_knows_is_not_corrected(session: AsyncSession) -> None:
    tall, ball = await make_event(session), await make_event(session)
    for event, title in ((tall, "Tall Tales"), (ball, "Ball Games")):
        await session.execute(update(Event).where(Event.id == event.event_id).values(title=title))
    await session.commit()
    await refresh_search_documents(session, [tall.event_id, ball.event_id])
    await session.commit()
    # "tall" and "ball" are one edit apart, but each is a word the documents have.
    assert await _find(session, "tall") == [tall.event_id]
    assert await _find(session, "ball") == [ball.event_id]
    # Nor is a prefix being typed a typo.
    assert await _find(session, "tal") == [tall.event_id]
    # "gall" is no one's word: it may be either.
    assert set(await _find(session, "gall tales")) == {tall.event_id}
    assert set(await _find(session, "gall")) == {tall.event_id, ball.event_id}


@pytest.fixture
async def retitled(session: AsyncSession) -> uuid.UUID:
    event = await make_event(session)
    await session.execute(update(Event).where(Event.id == event.event_id).values(title="Zephyrine"))
    await session.commit()
    await refresh_search_documents(session, [event.event_id])
    await session.commit()
    return event.event_id


async def _dictionary(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(SearchWord.word))).all())


async def test_a_refresh_adds_the_words_of_titles_performers_venues_and_cities(
    session: AsyncSession, retitled: uuid.UUID
) -> None:
    # Short words ("the") are never corrected, so they are not kept.
    assert await _dictionary(session) == {"zephyrine", "testers", "test", "hall", "testville"}
    assert await _find(session, "zephryine") == [retitled]
    assert await _find(session, "testvile") == [retitled]


async def test_a_rename_reaches_the_dictionary_through_the_refresh(
    session: AsyncSession, retitled: uuid.UUID
) -> None:
    venue_id = await session.scalar(select(Event.venue_id).where(Event.id == retitled))
    await session.execute(update(Venue).where(Venue.id == venue_id).values(name="Roundhouse"))
    await session.execute(update(Event).where(Event.id == retitled).values(title="Obsidian"))
    await session.commit()
    assert await _find(session, "roundhuose") == []
    await refresh_search_documents(session, [retitled])
    await session.commit()
    assert await _find(session, "roundhuose") == [retitled]
    assert await _find(session, "obsdian") == [retitled]
    # The old title's word may stay in the dictionary, but no document has it any more.
    assert "zephyrine" in await _dictionary(session)
    assert await _find(session, "zephryine") == []
    # A full refresh keeps exactly the words some document has.
    assert await refresh_all_search_documents(session) == 1
    await session.commit()
    assert await _dictionary(session) == {"obsidian", "testers", "roundhouse", "testville"}


async def test_deletion_keys_cover_the_edit_budget(session: AsyncSession) -> None:
    async def keys(word: str) -> set[str]:
        return set(await session.scalar(text("SELECT search_word_keys(:w)"), {"w": word}) or [])

    # Below four letters no edit is forgiven: the word alone.
    assert await keys("ice") == {"ice"}
    # Four to seven letters: the word and every one-letter deletion.
    assert await keys("tour") == {"tour", "our", "tur", "tor", "tou"}
    # Eight or more: also every two-letter deletion (C(8, 2) = 28 positions, fewer distinct).
    festival = await keys("festival")
    assert {"festival", "estival", "festivl", "fstval", "festiv"} <= festival
    assert all(len(key) >= 6 for key in festival)
    assert len(festival) == 1 + 8 + 28
    # Beyond 32 letters nothing is derived: no name is that long.
    assert await keys("a" * 33) == {"a" * 33}


async def test_the_migration_fills_the_dictionary_for_existing_events(empty_database_url: str) -> None:
    migrations.upgrade(empty_database_url, "0001")
    async with engine_scope(empty_database_url) as engine, make_sessionmaker(engine)() as session:
        event = await make_event(session)
    migrations.upgrade(empty_database_url)
    async with engine_scope(empty_database_url) as engine, make_sessionmaker(engine)() as session:
        assert await _dictionary(session) == {"night", "testers", "test", "hall", "testville"}
        assert await _find(session, "tetsers") == [event.event_id]
