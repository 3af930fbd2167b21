"""Fan accounts: registration, sign-in with a password, bearer sessions, revocation.

Passwords are hashed with Argon2id (argon2-cffi's defaults, which follow RFC 9106's
recommendations); hashing runs in a thread so a burst of sign-ins does not stall the event
loop. A session token is 256 random bits shown once; only its SHA-256 is stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Fan, FanSession
from booking.errors import EmailTaken, InvalidCredentials, InvalidRequest, NotAuthenticated

SESSION_LIFETIME = dt.timedelta(days=30)
MIN_PASSWORD = 10
MAX_PASSWORD = 256
# Deliberately loose: one @, something either side, a dot in the domain. The confirmation
# email is the real check.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
TOKEN_PREFIX = "bofan_"  # noqa: S105 (a prefix that makes leaked tokens easy to scan for)

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class FanView:
    id: uuid.UUID
    email: str
    display_name: str
    created_at: dt.datetime


@dataclass(frozen=True)
class IssuedSession:
    id: uuid.UUID
    fan_id: uuid.UUID
    token: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class Principal:
    """Who a bearer token belongs to, and which session it is (for signing out)."""

    fan_id: uuid.UUID
    session_id: uuid.UUID


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_new(email: str, password: str, display_name: str) -> str:
    email = email.strip()
    if len(email) > 320 or not EMAIL.match(email):
        raise InvalidRequest("Give a valid email address.")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(f"A password is {MIN_PASSWORD} to {MAX_PASSWORD} characters long.")
    if len(display_name) > 120:
        raise InvalidRequest("A display name is at most 120 characters.")
    return email


async def register(session: AsyncSession, *, email: str, password: str, display_name: str = "") -> FanView:
    """Create a fan. Emails are unique whatever their case. Does not commit.

    Raises:
        InvalidRequest: malformed email, password too short or long, name too long.
        EmailTaken: a fan with this email exists.
    """
    email = _check_new(email, password, display_name)
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    row = (
        await session.execute(
            pg_insert(Fan)
            .values(email=email, password_hash=password_hash, display_name=display_name.strip())
            .on_conflict_do_nothing(index_elements=[func.lower(Fan.email)])
            .returning(Fan.id, Fan.created_at)
        )
    ).first()
    if row is None:
        raise EmailTaken()
    return FanView(id=row[0], email=email, display_name=display_name.strip(), created_at=row[1])


async def sign_in(session: AsyncSession, *, email: str, password: str) -> IssuedSession:
    """Check the password and open a session. Does not commit.

    Raises:
        InvalidCredentials: unknown email, wrong password or disabled account (one answer
            for all, in the same time).
    """
    fan = await session.scalar(
        select(Fan).where(func.lower(Fan.email) == email.strip().lower(), Fan.disabled_at.is_(None))
    )
    stored = fan.password_hash if fan is not None else _DUMMY_HASH
    try:
        await asyncio.to_thread(_hasher.verify, stored, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        raise InvalidCredentials() from None
    if fan is None:
        raise InvalidCredentials()
    if _hasher.check_needs_rehash(stored):
        new_hash = await asyncio.to_thread(_hasher.hash, password)
        await session.execute(update(Fan).where(Fan.id == fan.id).values(password_hash=new_hash))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session_id, expires_at = (
        await session.execute(
            insert(FanSession)
            .values(fan_id=fan.id, token_hash=token_digest(token), expires_at=func.now() + SESSION_LIFETIME)
            .returning(FanSession.id, FanSession.expires_at)
        )
    ).one()
    return IssuedSession(id=session_id, fan_id=fan.id, token=token, expires_at=expires_at)


async def authenticate(session: AsyncSession, token: str) -> Principal:
    """The fan a bearer token belongs to, if the session is open and the fan enabled.

    Raises:
        NotAuthenticated: unknown, expired or revoked token, or a disabled fan.
    """
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        raise NotAuthenticated()
    row = (
        await session.execute(
            select(FanSession.id, FanSession.fan_id)
            .join(Fan, Fan.id == FanSession.fan_id)
            .where(
                FanSession.token_hash == token_digest(token),
                FanSession.revoked_at.is_(None),
                FanSession.expires_at > func.now(),
                Fan.disabled_at.is_(None),
            )
        )
    ).first()
    if row is None:
        raise NotAuthenticated()
    return Principal(fan_id=row.fan_id, session_id=row.id)


class PrincipalCache:
    """Bearer tokens this process verified in the last ``ttl`` seconds, so a fan's next
    requests cost no database work to authenticate.

    Keyed by the token's digest (the token itself is never kept). A revocation made through
    this process (sign-out) drops its entries at once; one made elsewhere (another API
    process, an operator) takes effect here within ``ttl``. Bounded: past ``max_entries`` the
    oldest entries go first.
    """

    def __init__(self, *, ttl: float = 10.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str, now: float) -> Principal | None:
        digest = token_digest(token)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[digest]
            return None
        return entry[1]

    def put(self, token: str, principal: Principal, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            # Dicts keep insertion order: the first key is the oldest entry.
            del self._entries[next(iter(self._entries))]
        self._entries[token_digest(token)] = (now + self.ttl, principal)

    def forget_session(self, session_id: uuid.UUID) -> None:
        self._forget(lambda principal: principal.session_id == session_id)

    def forget_fan(self, fan_id: uuid.UUID) -> None:
        self._forget(lambda principal: principal.fan_id == fan_id)

    def _forget(self, doomed: Callable[[Principal], bool]) -> None:
        for digest in [d for d, (_, principal) in self._entries.items() if doomed(principal)]:
            self._entries.pop(digest, None)


async def sign_out(session: AsyncSession, principal: Principal) -> None:
    """Revoke this session's token; other sessions stay open. Repeating is harmless."""
    await session.execute(
        update(FanSession)
        .where(FanSession.id == principal.session_id, FanSession.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def sign_out_everywhere(session: AsyncSession, fan_id: uuid.UUID) -> int:
    """Revoke every open session of a fan; returns how many."""
    result = await session.execute(
        update(FanSession)
        .where(FanSession.fan_id == fan_id, FanSession.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def get_fan(session: AsyncSession, fan_id: uuid.UUID) -> FanView:
    """Raises: NotAuthenticated (the fan no longer exists)."""
    fan = await session.get(Fan, fan_id)
    if fan is None:
        raise NotAuthenticated()
    return FanView(id=fan.id, email=fan.email, display_name=fan.display_name, created_at=fan.created_at)
