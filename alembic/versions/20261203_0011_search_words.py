"""A dictionary of the catalog's name words, for search that forgives typos.

Trigram similarity misses most one-letter typos of short words (``hamlte``, ``aruora``): a
word of six letters has too few trigrams to survive one edit. ``search_words`` holds every
word of the events' titles, performers, venue names and cities (four to 32 letters, no
digits or punctuation), and ``search_word_keys`` gives each word its deletion neighbourhood:
the word itself, every way of deleting one letter (four letters or more) and every way of
deleting two (eight or more). Two words whose keys meet are candidates for being one (or
two) edits apart; a GIN index over the keys finds them without scanning the dictionary, and
``levenshtein_less_equal`` (fuzzystrmatch) then confirms the distance.

The words of existing events are taken from their search documents (weights A and B) with
the same rule as ``booking.catalog.search``; the migration keeps its own copy so that it keeps
meaning what it meant when it was written.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # fuzzystrmatch is a trusted extension (PostgreSQL 13+): a database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS fuzzystrmatch")
    # IMMUTABLE (it depends on nothing but its argument) so that an index may be built on it.
    # Words beyond 32 letters get no deletions: no name is that long, and the two-deletion
    # neighbourhood grows with the square of the length. The series run to the constant 32
    # because the planner then knows they are short; bounded by length(word) it assumes a
    # thousand rows each, a million pairs, and JIT-compiles the body on every call (~7 ms).
    op.execute(
        """
        CREATE FUNCTION search_word_keys(word text) RETURNS text[]
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$
            SELECT ARRAY(
                SELECT word
                UNION
                SELECT overlay(word PLACING '' FROM i FOR 1)
                FROM generate_series(1, 32) AS i
                WHERE length(word) BETWEEN 4 AND 32 AND i <= length(word)
                UNION
                SELECT overlay(overlay(word PLACING '' FROM j FOR 1) PLACING '' FROM i FOR 1)
                FROM generate_series(1, 32) AS i, generate_series(1, 32) AS j
                WHERE length(word) BETWEEN 8 AND 32 AND i < j AND j <= length(word)
            )
        $$
        """
    )
    op.create_table(
        "search_words",
        sa.Column("word", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("word", name=op.f("pk_search_words")),
    )
    op.create_index(
        "ix_search_words_keys",
        "search_words",
        [sa.text("search_word_keys(word)")],
        unique=False,
        postgresql_using="gin",
    )
    op.execute(
        """
        INSERT INTO search_words (word)
        SELECT DISTINCT word
        FROM event_search, unnest(tsvector_to_array(ts_filter(document, ARRAY['a', 'b']::"char"[]))) AS word
        WHERE length(word) BETWEEN 4 AND 32 AND word !~ '[[:digit:][:punct:]]'
        """
    )


def downgrade() -> None:
    # fuzzystrmatch stays: an extension is database-wide and harmless to leave installed.
    op.drop_index("ix_search_words_keys", table_name="search_words", postgresql_using="gin")
    op.drop_table("search_words")
    op.execute("DROP FUNCTION search_word_keys(text)")
