"""Fan authentication: ``Authorization: Bearer <token>`` from ``POST /sessions``.

Handlers that take a ``fan`` parameter require a signed-in fan; the dependency answers 401
problem+json otherwise. Handlers that do not ask for it never look at the header.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.openapi.spec import Components, SecurityScheme

from api.idempotency import owned_session
from api.principals import bearer_of, fan_principal
from booking.accounts import fans
from booking.errors import NotAuthenticated
from booking.logs import bind

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
    return bearer_of(request.headers.get("authorization", ""))


async def provide_fan(request: Request[Any, Any, Any]) -> fans.Principal:
    """The signed-in fan, from this process's cache of recently verified tokens or else one
    short read of its own.

    Deliberately not the request's session: a route that takes ``fan`` but no
    ``db_session`` (checkout, which calls the payment provider between its transactions)
    then holds no connection at all while it waits.

    Raises: NotAuthenticated (no, unknown, expired or revoked token).
    """
    token = bearer_token(request)
    if token is None:
        raise NotAuthenticated("Send Authorization: Bearer <token>, from POST /sessions.")
    # Under an Idempotency-Key the request already has its session (and connection).
    principal = await fan_principal(request.app.state, token, owned_session(request.scope))
    bind(fan_id=principal.fan_id)
    return principal
