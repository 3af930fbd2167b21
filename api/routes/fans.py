"""Fan accounts and sessions."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import SECURITY
from api.rate_limits import client_address
from api.schemas import Text
from booking.accounts import fans
from booking.accounts.backoff import SignInGuard
from booking.logs import bind, get_logger

log = get_logger("boxoffice.api.fans")


class Registration(msgspec.Struct, frozen=True):
    email: Text
    password: Text
    display_name: Text = ""


class Credentials(msgspec.Struct, frozen=True):
    email: Text
    password: Text


class FanOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    email: str
    display_name: str
    created_at: dt.datetime


class SessionOut(msgspec.Struct, frozen=True):
    token: str
    token_type: str
    expires_at: dt.datetime
    fan_id: uuid.UUID


def _fan_out(view: fans.FanView) -> FanOut:
    return FanOut(id=view.id, email=view.email, display_name=view.display_name, created_at=view.created_at)


class FanController(Controller):
    tags = ["fans"]

    @post(
        "/fans",
        summary="Create a fan account",
        description="Email (unique, any case) and a password of 10 to 256 characters. 409 when taken.",
        opt={"rate_limit": "signup"},
    )
    async def register(
        self, db_session: NamedDependency[AsyncSession], data: JSONBody[Registration]
    ) -> FanOut:
        view = await fans.register(
            db_session, email=data.email, password=data.password, display_name=data.display_name
        )
        bind(fan_id=view.id)
        log.info("fan registered")
        return _fan_out(view)

    @post(
        "/sessions",
        summary="Sign in",
        description=(
            "Returns a bearer token for `Authorization: Bearer <token>`, valid 30 days or until revoked."
            " An `Idempotency-Key` is not used here: the answer holds a secret, so nothing is kept"
            " to replay, and a retry signs in again. After repeated failures for one email (or"
            " from one address) sign-in pauses, longer each time: 429 `login-backoff`, with"
            " `Retry-After`, whether or not the email has an account."
        ),
        opt={"idempotency_key": "unstored", "rate_limit": "login"},
    )
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[Credentials],
    ) -> SessionOut:
        guard: SignInGuard = request.app.state.rate_limits.sign_in
        async with guard.attempt(data.email, client_address(request)):
            issued = await fans.sign_in(db_session, email=data.email, password=data.password)
        bind(fan_id=issued.fan_id)
        log.info("fan signed in")
        return SessionOut(
            token=issued.token,
            token_type="Bearer",  # noqa: S106 (the scheme name, not a secret)
            expires_at=issued.expires_at,
            fan_id=issued.fan_id,
        )

    @delete("/sessions/current", summary="Sign out (revoke this token)", security=SECURITY)
    async def sign_out(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[fans.Principal],
    ) -> None:
        await fans.sign_out(db_session, fan)
        request.app.state.fan_principals.forget_session(fan.session_id)

    @delete("/sessions", summary="Sign out everywhere (revoke every token)", security=SECURITY)
    async def sign_out_everywhere(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[fans.Principal],
    ) -> None:
        await fans.sign_out_everywhere(db_session, fan.fan_id)
        request.app.state.fan_principals.forget_fan(fan.fan_id)

    @get("/me", summary="The signed-in fan", security=SECURITY)
    async def me(
        self, db_session: NamedDependency[AsyncSession], fan: NamedDependency[fans.Principal]
    ) -> FanOut:
        return _fan_out(await fans.get_fan(db_session, fan.fan_id))
