"""Alembic environment: runs migrations against the URL handed over by
``booking.migrations`` or, when run as plain ``alembic``, BOXOFFICE_DATABASE_URL."""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import pool

from alembic import context
from booking.db import make_sync_engine
from booking.models import metadata
from booking.settings import load_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("database_url") or load_settings().database_url
    if not url:
        raise SystemExit(
            "set BOXOFFICE_DATABASE_URL, or run `boxoffice db upgrade` to use the embedded server"
        )
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, compare_server_default=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, compare_server_default=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_sync_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, compare_server_default=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
