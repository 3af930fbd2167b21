"""Staff keys: created with a role, shown once, stored as a hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import StaffKey, StaffRole

KEY_SCHEME = "bosk"
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class StaffKeyExists(Exception):
    """A staff key with that name already exists."""


@dataclass(frozen=True)
class StaffPrincipal:
    """Who is acting, as the audit log names them."""

    id: uuid.UUID
    name: str
    role: StaffRole


@dataclass(frozen=True)
class KeyView:
    id: uuid.UUID
    name: str
    role: StaffRole
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class IssuedKey:
    id: uuid.UUID
    name: str
    role: StaffRole
    secret: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(secret: str) -> tuple[str, str] | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 12:
        return None
    return parts[1], parts[2]


async def create_key(session: AsyncSession, name: str, role: StaffRole) -> IssuedKey:
    """Create a key and return its secret, which is never shown again. Does not commit.

    Raises:
        StaffKeyExists: ``name`` is taken (revoked keys keep their names, for the audit log).
    """
    if await session.scalar(select(StaffKey.id).where(StaffKey.name == name)) is not None:
        raise StaffKeyExists(name)
    prefix = secrets.token_hex(6)
    secret = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    key = StaffKey(name=name, role=role, key_prefix=prefix, key_hash=_hash(secret))
    session.add(key)
    await session.flush()
    return IssuedKey(id=key.id, name=name, role=role, secret=secret)


async def authenticate(session: AsyncSession, secret: str) -> StaffKey | None:
    """The live key ``secret`` belongs to, or None. Compares hashes in constant time. Reads
    only: recording the use is ``record_use``, in a transaction of its own."""
    split = _split(secret)
    if split is None:
        return None
    key = await session.scalar(
        select(StaffKey).where(StaffKey.key_prefix == split[0], StaffKey.revoked_at.is_(None))
    )
    if key is None or not hmac.compare_digest(key.key_hash, _hash(secret)):
        return None
    return key


async def record_use(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Note that the key was used now, at most once a minute. Commit it on its own: the
    update locks the key's row, and inside a request's transaction it would make that key's
    other requests (a gate scanning, a console polling, a payment provider call in between)
    wait for the whole request."""
    await session.execute(
        update(StaffKey)
        .where(
            StaffKey.id == key_id,
            or_(StaffKey.last_used_at.is_(None), StaffKey.last_used_at < func.now() - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=func.now())
    )


async def list_keys(session: AsyncSession) -> list[KeyView]:
    """Every key, live ones first, newest first; never the secrets (only hashes are kept)."""
    rows = await session.scalars(
        select(StaffKey).order_by(StaffKey.revoked_at.is_not(None), StaffKey.created_at.desc())
    )
    return [
        KeyView(key.id, key.name, key.role, key.created_at, key.last_used_at, key.revoked_at) for key in rows
    ]


async def revoke_key(session: AsyncSession, name: str) -> bool:
    """Revoke the live key called ``name``; False when there is none. Does not commit."""
    revoked = await session.execute(
        update(StaffKey)
        .where(StaffKey.name == name, StaffKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(StaffKey.id)
    )
    return revoked.first() is not None
