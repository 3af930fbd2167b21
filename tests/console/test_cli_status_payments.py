"""`boxoffice status` shows the API's payment breakers, read from its /metrics: which
providers have payments paused, never counted against health (a provider outage is not
Boxoffice's)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from booking.payments.breaker import ProviderBreaker
from booking.payments.gateway import GatewayTimeout
from booking.settings import Settings
from console.cli import app
from tests.live_api import LiveApi

runner = CliRunner()


async def _no_answer() -> None:
    raise GatewayTimeout("no answer")


async def _open(breaker: ProviderBreaker) -> None:
    for _ in range(breaker.failures):
        with breaker.admit() as admission, pytest.raises(GatewayTimeout):
            await admission.call(_no_answer)


async def test_status_names_a_provider_whose_payments_are_paused(
    settings: Settings, live_api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(settings.data_dir))
    assert live_api.app is not None

    _, report = _status(live_api.url)
    assert report["payments"]["status"] == "ok"
    assert report["payments"]["providers"]["offline"]["closed"] >= 1

    await _open(live_api.app.state.gateways.breaker("offline"))
    _, report = _status(live_api.url)
    payments = report["payments"]
    assert payments["status"] == "paused: offline"
    assert payments["providers"]["offline"]["open"] == 1
    assert payments["healthy"] is True
    assert "payments" not in report["down"]

    table = runner.invoke(app, ["status", "--api", live_api.url], env={"COLUMNS": "200"})
    assert "paused: offline" in table.output
    assert "checkouts answered 503, holds kept" in table.output


async def test_status_says_when_the_breakers_cannot_be_read(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(settings.data_dir))
    _, report = _status("http://127.0.0.1:9")  # nothing listens there
    assert report["payments"]["status"] == "unknown"
    assert report["payments"]["healthy"] is True
    assert report["payments"]["error"]


def _status(url: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, ["status", "--json", "--api", url])
    return result.exit_code, json.loads(result.stdout)
