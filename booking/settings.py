"""Settings, read from the environment (prefix ``BOXOFFICE_``) and an optional ``.env`` file.

Leaving ``BOXOFFICE_DATABASE_URL`` or ``BOXOFFICE_REDIS_URL`` unset means "run the embedded
server under the data folder"; that decision is made by the local stack, never here, so
settings stay a plain value object with no side effects.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BOXOFFICE_"


class SettingsError(Exception):
    """A setting has a value Boxoffice cannot use; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (postgresql+psycopg://...). Unset: embedded PostgreSQL.",
    )
    redis_url: str | None = Field(
        default=None, description="redis:// or valkey:// URL. Unset: embedded Valkey."
    )
    data_dir: Path = Field(default=Path(".boxoffice"), description="Embedded servers, keys, mail.")

    hold_ttl_seconds: int = Field(default=480, ge=300, le=600, description="Hold lifetime, 5 to 10 min.")
    max_tickets_per_fan: int = Field(default=8, ge=1, le=100)
    payment_grace_seconds: int = Field(
        default=600, ge=60, le=1800, description="How long a hold in payment is kept for the payer."
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=2, ge=1, le=64)
    worker_count: int = Field(default=1, ge=1, le=32)
    worker_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How much the worker daemon yields the CPU to the API and database (Unix nice).",
    )
    daemon_heartbeat_seconds: float = Field(
        default=5.0,
        ge=0.2,
        le=60,
        description="How often a worker daemon writes its heartbeat to Redis; it counts as stale "
        "after three missed beats and disappears after twelve.",
    )
    daemon_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve the worker daemon's own Prometheus metrics on this port (for a daemon "
        "on a host without the API). Unset: none; the API's /metrics covers a daemon on its host.",
    )
    daemon_metrics_host: str = Field(
        default="127.0.0.1", description="The address the daemon's metrics port listens on."
    )
    api_server: Literal["granian", "uvicorn"] = Field(
        default="uvicorn", description="The ASGI server `boxoffice serve` and `boxoffice up` run."
    )
    access_log: bool = Field(
        default=False, description="Log every request (off: one line per request costs)."
    )
    log_format: Literal["json", "console"] | None = Field(
        default=None, description="Log lines as json or console. Unset: console on a terminal, else json."
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="The lowest level of line logged."
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Database connections per API process (no overflow)."
    )
    db_pool_timeout_seconds: float = Field(
        default=1.0,
        ge=0.05,
        le=30,
        description="How long a request waits for a pooled connection before it is answered 503.",
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Requests one API process works on at once; more are answered 503 at once.",
    )

    smtp_host: str | None = Field(default=None, description="Unset: mail is written as .eml files.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    mail_from: str = "Boxoffice <tickets@boxoffice.local>"
    public_url: str | None = Field(
        default=None,
        description="Where fans reach the API, for the links in emails (https://tickets.example.org). "
        "Unset: http://API_HOST:API_PORT.",
    )

    offline_payments: bool = Field(
        default=True, description="Offer the offline test provider (test cards). Turn off in production."
    )
    cancel_cutoff_hours: int = Field(
        default=24, ge=0, le=24 * 60, description="Fans may cancel an order until this long before the event."
    )
    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = Field(
        default=None,
        description="The Stripe API address, for a local Stripe stand-in such as stripe-mock. "
        "Unset: Stripe's own.",
    )

    ticket_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 private key, PEM. Unset: generated once into the data folder.",
    )
    ticket_previous_keys: str | None = Field(
        default=None,
        description="PEM public keys of earlier ticket signing keys, which keep verifying the "
        "tickets they signed (as do files in <data>/keys/previous/*.pem); see docs/tickets.md.",
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret for the ticket links in emails. Unset: generated once into the data folder.",
    )

    # Rate limits (api.rate_limits, booking.rate_limits): each is COUNT/WINDOW, the window
    # a unit (second, minute, hour, day) or a number of them ("20/5 minutes"), or "off".
    rate_limits: bool = Field(
        default=True,
        description="Enforce the rate limits and the sign-in back-off below. Off: none at all.",
    )
    rate_limit_signup_per_address: str = Field(default="5/hour", description="POST /fans per client address.")
    rate_limit_login_per_address: str = Field(default="10/minute", description="POST /sessions per address.")
    rate_limit_login_per_account: str = Field(default="10/minute", description="POST /sessions per email.")
    rate_limit_hold_per_fan: str = Field(default="10/minute", description="POST /holds per fan.")
    rate_limit_hold_per_address: str = Field(default="60/minute", description="POST /holds per address.")
    rate_limit_renew_per_fan: str = Field(default="10/minute", description="Hold renewals per fan.")
    rate_limit_renew_per_address: str = Field(default="60/minute", description="Renewals per address.")
    rate_limit_checkout_per_fan: str = Field(default="10/minute", description="Checkouts per fan.")
    rate_limit_checkout_per_address: str = Field(default="60/minute", description="Checkouts per address.")
    rate_limit_queue_per_fan: str = Field(default="10/minute", description="Waiting-room joins per fan.")
    rate_limit_queue_per_address: str = Field(default="60/minute", description="Joins per address.")
    login_backoff_failures: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="Consecutive failed sign-ins of one email after which it must wait (0: never).",
    )
    login_backoff_address_failures: int = Field(
        default=20,
        ge=0,
        le=10_000,
        description="Consecutive failed sign-ins from one address after which it must wait (0: never).",
    )
    login_backoff_seconds: int = Field(
        default=30, ge=1, le=3600, description="The first wait; each further failure doubles it."
    )
    login_backoff_max_seconds: int = Field(
        default=900, ge=1, le=86_400, description="The longest wait of the sign-in back-off."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (10.0.0.0/8) of proxies whose "
        "X-Forwarded-For names the client. Unset: none, the peer address is the client.",
    )
    payment_breaker_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Payment-provider failures in a row (timeouts, connection errors, 5xx; not "
        "declines or other 4xx), within the window, after which a process pauses calls to it.",
    )
    payment_breaker_window_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="The window those failures must fall in: a run of failures spread wider is "
        "forgotten, its first ones no longer counted.",
    )
    payment_breaker_cooldown_seconds: float = Field(
        default=30.0,
        ge=0.1,
        le=3600,
        description="How long calls stay paused (checkout answers 503 with Retry-After, holds "
        "kept) before one trial call goes through; its success resumes them.",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("must be a PostgreSQL URL such as postgresql+psycopg://user@host/db")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// address")
        return value.rstrip("/") if value is not None else None

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "valkey://", "valkeys://", "unix://")):
            raise ValueError("must be a redis:// (or valkey://, rediss://, unix://) URL")
        return value

    @field_validator("daemon_metrics_port", mode="before")
    @classmethod
    def _blank_port_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _log_names_any_case(cls, value: object, info: ValidationInfo) -> object:
        # INFO and info, JSON and json: operators write both. Empty means the default.
        if isinstance(value, str):
            return value.strip().lower() or cls.model_fields[str(info.field_name)].default
        return value

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def public_base_url(self) -> str:
        """The address fans use, without a trailing slash."""
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    @field_validator(
        "rate_limit_signup_per_address",
        "rate_limit_login_per_address",
        "rate_limit_login_per_account",
        "rate_limit_hold_per_fan",
        "rate_limit_hold_per_address",
        "rate_limit_renew_per_fan",
        "rate_limit_renew_per_address",
        "rate_limit_checkout_per_fan",
        "rate_limit_checkout_per_address",
        "rate_limit_queue_per_fan",
        "rate_limit_queue_per_address",
        mode="before",
    )
    @classmethod
    def _rate_is_count_per_window(cls, value: object) -> object:
        if isinstance(value, str):
            parse_rate(value)
            return value.strip().lower()
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        proxy_networks(value)
        return value


_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_RATE = re.compile(r"^(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?$")


def parse_rate(text: str) -> tuple[int, int] | None:
    """``"10/minute"``, ``"20/5 minutes"``, ``"5 per hour"`` as (count, window seconds);
    ``"off"`` (or empty) as None, no limit.

    Raises:
        ValueError: anything else, or a count or window of 0.
    """
    text = text.strip().lower()
    if text in ("", "off", "none"):
        return None
    match = _RATE.match(text)
    if match is None:
        raise ValueError('must be COUNT/WINDOW such as "10/minute" or "20/5 minutes", or "off"')
    count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or multiple < 1:
        raise ValueError("a rate limit's count and window are at least 1")
    return count, multiple * _UNIT_SECONDS[unit]


def proxy_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks of a comma-separated list of addresses and networks.

    Raises:
        ValueError: an entry that is neither.
    """
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def describe_error(error: ValidationError) -> str:
    """One line naming the first offending environment variable and what is wrong with it."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "settings"
    variable = ENV_PREFIX + field.upper()
    given = first.get("input")
    secret = any(word in field for word in ("password", "secret", "key"))
    shown = "" if secret or isinstance(given, dict) or given is None else f"={given!s}"
    message = first["msg"].removeprefix("Value error, ")
    return f"invalid setting {variable}{shown}: {message}"


def load_settings() -> Settings:
    """Read settings from the environment.

    Raises:
        SettingsError: a variable is malformed or out of range; the message is one line
            naming the variable, fit to print to an operator.
    """
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_error(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
