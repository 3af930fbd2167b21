"""Staff identity, keys and the audit log."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec
from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import STORABLE_TEXT
from api.staff import ANY_STAFF, ON_CALL, STAFF_SECURITY
from booking.accounts import staff as staff_keys
from booking.accounts.models import StaffRole
from booking.errors import StaffKeyNotFound
from booking.ops import audit

ADMIN_ONLY = (StaffRole.ADMIN,)


class StaffMe(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    role: str


class StaffKeyOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    role: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class StaffKeyList(msgspec.Struct, frozen=True):
    items: list[StaffKeyOut]


class AuditList(msgspec.Struct, frozen=True):
    items: list[audit.AuditView]


class StaffController(Controller):
    path = "/staff"
    tags = ["staff"]
    security = STAFF_SECURITY

    @get("/me", summary="The staff key in use", opt={"roles": ANY_STAFF})
    async def me(self, staff: NamedDependency[staff_keys.StaffPrincipal]) -> StaffMe:
        return StaffMe(id=staff.id, name=staff.name, role=staff.role.value)

    @get("/keys", summary="Every staff key (never the secrets)", opt={"roles": ADMIN_ONLY})
    async def keys(
        self, staff: NamedDependency[staff_keys.StaffPrincipal], db_session: NamedDependency[AsyncSession]
    ) -> StaffKeyList:
        views = await staff_keys.list_keys(db_session)
        return StaffKeyList(
            items=[
                StaffKeyOut(v.id, v.name, v.role.value, v.created_at, v.last_used_at, v.revoked_at)
                for v in views
            ]
        )

    @delete(
        "/keys/{name:str}",
        summary="Revoke a staff key",
        description="The key stops working at once; its name stays taken, for the audit log.",
        opt={"roles": ADMIN_ONLY, "audit": "staff_key.revoke", "audit_target": "staff_key"},
    )
    async def revoke(
        self,
        staff: NamedDependency[staff_keys.StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        name: Annotated[str, Parameter(max_length=120, pattern=STORABLE_TEXT)],
    ) -> None:
        if not await staff_keys.revoke_key(db_session, name):
            raise StaffKeyNotFound(f"No live key called {name!r}.")

    @get(
        "/audit",
        summary="The audit log, newest first",
        description="Every staff and operator action with who, when and the outcome.",
        opt={"roles": ON_CALL},
    )
    async def audit_log(
        self,
        staff: NamedDependency[staff_keys.StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        limit: Annotated[int, Parameter(ge=1, le=500, description="At most this many")] = 50,
        after_id: Annotated[
            int | None, Parameter(ge=0, le=2**63 - 1, description="Only entries after this id")
        ] = None,
    ) -> AuditList:
        return AuditList(items=await audit.tail(db_session, limit=limit, after_id=after_id))
