from __future__ import annotations

from collections.abc import Iterator

import pytest

from booking.settings import get_settings


@pytest.fixture
def job_env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Jobs read their servers from settings, as in a worker."""
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
