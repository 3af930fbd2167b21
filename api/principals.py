"""Who a fan bearer token belongs to, as the API's layers need to know it.

Both the fan dependency and the Idempotency-Key middleware (which scopes keys to the fan)
ask; one process-wide cache of recently verified tokens answers both, so a request
authenticates once at most.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts import fans
from booking.db import each_statement_commits


def bearer_of(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def fan_principal(state: Any, token: str, session: AsyncSession | None = None) -> fans.Principal:
    """The fan of ``token``, from ``state.fan_principals`` or else one read, on ``session``
    when the request already has one (one request never needs two connections at once), or
    on a short session of its own.

    Raises: NotAuthenticated (unknown, expired or revoked token, or a disabled fan).
    """
    cache: fans.PrincipalCache = state.fan_principals
    now = time.monotonic()
    principal = cache.get(token, now)
    if principal is None:
        if session is not None:
            principal = await fans.authenticate(session, token)
        else:
            async with state.sessionmaker() as own:
                # One read: without the ROLLBACK a closed session sends, which made the
                # buying path's next statements on the connection parse and plan afresh.
                await each_statement_commits(own)
                principal = await fans.authenticate(own, token)
        cache.put(token, principal, now)
    return principal
