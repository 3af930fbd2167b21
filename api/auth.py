"""Fan authentication: ``Authorization: Bearer <token>`` from ``POST /sessions``.

Handlers that take a ``fan`` parameter require a signed-in fan; the dependency answers 401
problem+json otherwise. Handlers that do not ask for it never look at the header.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts import fans
from booking.errors import NotAuthenticated

BEARER = "fanToken"
SECURITY: list[dict[str, list[str]]] = [{BEARER: []}]
STAFF_BEARER = "staffKey"
STAFF_SECURITY: list[dict[str, list[str]]] = [{STAFF_BEARER: []}]
COMPONENTS = Components(
    security_schemes={
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description="A token from POST /sessions.",
        ),
        STAFF_BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description="A staff key (bosk_...) from `boxoffice staff create-key`.",
        ),
    }
)


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def provide_fan(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> fans.Principal:
    """Raises: NotAuthenticated (no, unknown, expired or revoked token)."""
    token = bearer_token(request)
    if token is None:
        raise NotAuthenticated("Send Authorization: Bearer <token>, from POST /sessions.")
    return await fans.authenticate(db_session, token)
