from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from booking import migrations
from booking.db import make_sync_engine
from booking.models import metadata


def _tables(url: str) -> set[str]:
    engine = make_sync_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_then_downgrade_to_base_and_up_again(empty_database_url: str) -> None:
    assert migrations.current(empty_database_url) is None
    migrations.upgrade(empty_database_url)
    assert set(metadata.tables) <= _tables(empty_database_url)
    head = migrations.current(empty_database_url)
    assert head is not None

    migrations.downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) <= {"alembic_version"}

    migrations.upgrade(empty_database_url)
    assert migrations.current(empty_database_url) == head


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = make_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_the_comparison_would_notice_a_missing_migration(database_url: str) -> None:
    # Negative control: a column in the models but not in the migrations is reported.
    from sqlalchemy import Column, Integer, MetaData

    extended = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(extended)
    extended.tables["venues"].append_column(Column("capacity_hint", Integer))
    engine = make_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), extended)
    finally:
        engine.dispose()
    assert any(diff[0] == "add_column" and diff[3].name == "capacity_hint" for diff in differences)
