"""event search documents

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:00:00.000000

A weighted full-text document per event (GIN) and the lower-cased title and performer for
typo-tolerant trigram matching (pg_trgm, GIN). The documents of existing events are computed
here with the same SQL as ``booking.catalog.search``; the migration keeps its own copy so that
it keeps meaning what it meant when it was written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it.
    op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
    op.create_table('event_search',
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('document', postgresql.TSVECTOR(), nullable=False),
    sa.Column('names', sa.Text(), nullable=False),
    sa.Column('refreshed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_event_search_event_id_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_event_search'))
    )
    op.create_index('ix_event_search_document', 'event_search', ['document'], unique=False, postgresql_using='gin')
    op.create_index('ix_event_search_names_trgm', 'event_search', ['names'], unique=False, postgresql_using='gin', postgresql_ops={'names': 'gin_trgm_ops'})
    op.execute(
        """
        INSERT INTO event_search (event_id, document, names)
        SELECT e.id,
               setweight(to_tsvector('simple'::regconfig, e.title || ' ' || e.performer), 'A')
               || setweight(to_tsvector('simple'::regconfig, v.name || ' ' || e.city), 'B')
               || setweight(to_tsvector('simple'::regconfig, e.description), 'C'),
               lower(e.title || ' ' || e.performer)
        FROM events e JOIN venues v ON v.id = e.venue_id
        """
    )


def downgrade() -> None:
    # pg_trgm stays: an extension is database-wide and harmless to leave installed.
    op.drop_index('ix_event_search_names_trgm', table_name='event_search', postgresql_using='gin', postgresql_ops={'names': 'gin_trgm_ops'})
    op.drop_index('ix_event_search_document', table_name='event_search', postgresql_using='gin')
    op.drop_table('event_search')
