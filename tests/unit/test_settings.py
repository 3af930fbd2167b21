from __future__ import annotations

import pytest
from typer.testing import CliRunner

from booking.settings import Settings, SettingsError, load_settings
from console.cli import app


def test_defaults_run_the_embedded_servers_with_an_eight_minute_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOXOFFICE_DATABASE_URL", "BOXOFFICE_REDIS_URL", "BOXOFFICE_HOLD_TTL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.uses_embedded_postgres
    assert settings.uses_embedded_redis
    assert settings.hold_ttl_seconds == 8 * 60
    assert settings.max_tickets_per_fan == 8
    assert str(settings.data_dir) == ".boxoffice"


def test_environment_prefix_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_HOLD_TTL_SECONDS", "300")
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", "postgres://u@db.example/box")
    settings = load_settings()
    assert settings.hold_ttl_seconds == 300
    assert not settings.uses_embedded_postgres


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BOXOFFICE_HOLD_TTL_SECONDS", "60", "greater than or equal to 300"),
        ("BOXOFFICE_HOLD_TTL_SECONDS", "601", "less than or equal to 600"),
        ("BOXOFFICE_HOLD_TTL_SECONDS", "soon", "valid integer"),
        ("BOXOFFICE_MAX_TICKETS_PER_FAN", "0", "greater than or equal to 1"),
        ("BOXOFFICE_DATABASE_URL", "mysql://db/box", "PostgreSQL URL"),
        ("BOXOFFICE_REDIS_URL", "http://cache", "redis://"),
        ("BOXOFFICE_API_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert expected in message
    assert "\n" not in message


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_SMTP_PORT", "25")
    monkeypatch.setenv("BOXOFFICE_STRIPE_SECRET_KEY", "sk_live_do_not_print")
    monkeypatch.setenv("BOXOFFICE_API_WORKERS", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "sk_live_do_not_print" not in str(caught.value)


def test_the_cli_stops_on_a_bad_setting_with_exit_code_2_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOXOFFICE_HOLD_TTL_SECONDS", "30")
    result = CliRunner().invoke(app, ["db", "current"])
    assert result.exit_code == 2
    output = result.output.strip()
    assert output.startswith("boxoffice: invalid setting BOXOFFICE_HOLD_TTL_SECONDS=30")
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.hold_ttl_seconds = 400  # type: ignore[misc]
