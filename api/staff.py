"""Staff authentication, roles, and the audit of every staff action.

A staff route declares who may call it with ``opt={"roles": (...), "audit": "thing.verb"}``
and takes the ``staff`` dependency. The dependency checks the key
(``Authorization: Bearer bosk_...``) and the role on the server, for every request; ``admin``
may do everything. A route with no ``roles`` refuses everyone, so forgetting to declare
them fails closed.

Every state-changing staff request leaves one audit row, whatever the outcome. When the
action succeeds, the row is written in the action's own transaction (``record_success``,
called by the request's session just before it commits), so an action never lands without
its record. When it is refused (401/403) or fails, the work is rolled back and
``AuditMiddleware`` writes the row in a transaction of its own after the answer, with the
problem type. Handlers may add what only they know (an order id they created, change due)
with ``audit_detail``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import STAFF_SECURITY, bearer_token
from booking.accounts import staff as staff_keys
from booking.accounts.models import StaffRole
from booking.errors import Forbidden, NotAuthenticated
from booking.ops import audit
from booking.ops.models import ActorType, Outcome
from booking.text import storable

STAFF_PREFIX = "/staff"
_ACTOR = "audit_actor"
_EXTRA = "audit_extra"
_WRITTEN = "audit_written"
_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("boxoffice.api")
__all__ = ["STAFF_SECURITY", "AuditMiddleware", "audit_detail", "provide_staff", "record_success"]

BOX_OFFICE = (StaffRole.BOX_OFFICE,)
ON_CALL = (StaffRole.ON_CALL,)
GATE = (StaffRole.GATE,)
ANY_STAFF = tuple(StaffRole)


def roles_of(handler_opt: dict[str, Any]) -> frozenset[StaffRole]:
    """The roles a route admits: its declared ones plus admin; none when undeclared."""
    declared = handler_opt.get("roles")
    if not declared:
        return frozenset()
    return frozenset(declared) | {StaffRole.ADMIN}


async def provide_staff(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> staff_keys.StaffPrincipal:
    """Raises: NotAuthenticated (no, unknown or revoked key); Forbidden (the key's role is not
    one the route admits)."""
    secret = bearer_token(request)
    key = await staff_keys.authenticate(db_session, secret) if secret else None
    if key is None:
        raise NotAuthenticated("Send Authorization: Bearer <staff key>, from `boxoffice staff create-key`.")
    # A cheap first look, so most requests open no second session; record_use's own WHERE,
    # on the database clock, decides.
    stale = dt.datetime.now(dt.UTC) - staff_keys.LAST_USED_RESOLUTION
    if key.last_used_at is None or key.last_used_at < stale:
        async with request.app.state.sessionmaker() as own:
            await staff_keys.record_use(own, key.id)
            await own.commit()
    principal = staff_keys.StaffPrincipal(key.id, key.name, key.role)
    request.scope.setdefault("state", {})[_ACTOR] = audit.Actor(ActorType.STAFF, str(key.id), key.name)
    if principal.role not in roles_of(request.route_handler.opt):
        raise Forbidden(f"The {principal.role.value} role may not do this.")
    return principal


def audit_detail(request: Request[Any, Any, Any], **details: Any) -> None:
    """Add facts to this request's audit row (JSON-serialisable values)."""
    request.scope.setdefault("state", {}).setdefault(_EXTRA, {}).update(details)


def _audited(scope: Scope) -> bool:
    return str(scope.get("method", "")) in _CHANGING and str(scope["path"]).startswith(STAFF_PREFIX)


def _row(scope: Scope, status: int, problem: str | None, replayed: bool) -> dict[str, Any]:
    state = scope.get("state", {})
    handler = scope.get("route_handler")
    opt = handler.opt if handler is not None else {}
    method = str(scope.get("method", ""))
    path_params = scope.get("path_params") or {}
    target_id = next((str(value) for value in path_params.values()), None)
    details: dict[str, Any] = {"method": method, "path": storable(scope["path"], 500), "status": status}
    if replayed:
        details["replayed"] = True
    if problem:
        details["problem"] = problem
    extra = dict(state.get(_EXTRA, {}))
    if "target_id" in extra:
        target_id = str(extra.pop("target_id"))
    details.update(extra)
    return {
        "actor": state.get(_ACTOR) or audit.Actor(ActorType.STAFF, None, "(no valid key)"),
        "action": opt.get("audit") or f"{method} {scope['path']}",
        "outcome": _outcome(status),
        "target_type": opt.get("audit_target"),
        "target_id": target_id,
        "details": details,
    }


async def record_success(session: AsyncSession, scope: Scope) -> None:
    """Write the audit row of a staff action that succeeded into its own transaction."""
    if not _audited(scope) or _ACTOR not in scope.get("state", {}):
        return
    handler = scope.get("route_handler")
    status = int(getattr(handler, "status_code", None) or 200)
    await audit.record(session, **_row(scope, status, None, False))
    scope["state"][_WRITTEN] = True


def _outcome(status: int) -> Outcome:
    if status < 400:
        return Outcome.OK
    if status in (401, 403):
        return Outcome.DENIED
    return Outcome.FAILED


class AuditMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not _audited(scope):
            await next_app(scope, receive, send)
            return
        answer: dict[str, Any] = {"status": 500, "body": b"", "problem": False, "replayed": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                headers = dict(message.get("headers", []))
                answer["problem"] = b"problem+json" in headers.get(b"content-type", b"")
                answer["replayed"] = headers.get(b"idempotent-replayed") == b"true"
            elif message["type"] == "http.response.body" and answer["problem"]:
                answer["body"] += message.get("body", b"")
            await send(message)

        try:
            await next_app(scope, receive, capture)
        finally:
            written = scope.get("state", {}).get(_WRITTEN, False)
            if not (written and answer["status"] < 400):
                await self._write(scope, answer)

    async def _write(self, scope: Scope, answer: dict[str, Any]) -> None:
        problem = None
        if answer["problem"]:
            with contextlib.suppress(ValueError, AttributeError):
                problem = json.loads(answer["body"]).get("type")
        try:
            async with scope["litestar_app"].state.sessionmaker() as session:
                await audit.record(session, **_row(scope, answer["status"], problem, answer["replayed"]))
                await session.commit()
        except Exception:
            # The answer has gone out; a lost failure record must not turn it into an error.
            log.exception("could not write the audit row for %s %s", scope.get("method"), scope["path"])
