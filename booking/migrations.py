"""Running Alembic from code: `boxoffice db upgrade`, `boxoffice up` and the test fixtures."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

_PACKAGE_DIR = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url``, wherever Boxoffice is installed.

    A wheel carries the scripts in ``booking/_migrations``; a source checkout (and an
    editable install) has them at the repository root.

    Raises:
        FileNotFoundError: neither place has the migration scripts.
    """
    for ini in (_PACKAGE_DIR / "_migrations" / "alembic.ini", _PACKAGE_DIR.parent / "alembic.ini"):
        if ini.exists():
            break
    else:
        raise FileNotFoundError("the migration scripts are missing from this installation")
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.parent / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from sqlalchemy import inspect, text

    from booking.db import make_sync_engine

    engine = make_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
