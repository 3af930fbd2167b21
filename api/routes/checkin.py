"""Gate check-in for staff: scan a ticket online, upload offline scans, list the conflicts."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import STORABLE_TEXT
from api.staff import GATE, ON_CALL, STAFF_SECURITY, audit_detail
from booking.accounts.staff import StaffPrincipal
from booking.tickets import checkin
from booking.tickets.signing import MAX_TOKEN_CHARS

Gate = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=checkin.MAX_GATE_CHARS,
        pattern=STORABLE_TEXT,
        description="The gate scanning, as the audit log and the conflicts list will name it.",
    ),
]
Token = Annotated[
    str, msgspec.Meta(max_length=MAX_TOKEN_CHARS, description="The ticket's signed code (its QR).")
]


class CheckinRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``event_id``: the event this gate admits to; a ticket for another one is refused as
    ``wrong_event``. Leave it out to admit any event's tickets."""

    token: Token
    gate: Gate
    event_id: uuid.UUID | None = None


class CheckinOut(msgspec.Struct, frozen=True):
    # admitted | already_admitted | revoked | wrong_event: only `admitted` lets the holder in.
    result: str
    ticket_id: uuid.UUID
    order_id: uuid.UUID
    event_id: uuid.UUID
    seat: str
    # When and where the ticket was admitted: now and here for `admitted`, the first scan's
    # for `already_admitted`; null while it never was.
    admitted_at: dt.datetime | None
    gate: str | None
    revoked_at: dt.datetime | None
    scan_id: int


class OfflineScanIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: Token
    # The device's clock when it scanned, with a timezone.
    scanned_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]


class UploadRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    gate: Gate
    scans: Annotated[list[OfflineScanIn], msgspec.Meta(max_length=checkin.MAX_UPLOAD)]


class UploadedScanOut(msgspec.Struct, frozen=True):
    # The scan's position in the upload.
    index: int
    # admitted | conflict | revoked | invalid | not_found
    result: str
    scanned_at: dt.datetime
    ticket_id: uuid.UUID | None
    event_id: uuid.UUID | None
    seat: str | None
    # The ticket's admission: this scan's for `admitted`, the earlier one for `conflict`.
    admitted_at: dt.datetime | None
    admitted_gate: str | None
    revoked_at: dt.datetime | None
    # For `invalid` and `not_found`: the problem type code the online scan would answer.
    problem: str | None
    # True when this very scan had been uploaded before: the answer is the one given then.
    replayed: bool
    scan_id: int | None


class UploadOut(msgspec.Struct, frozen=True):
    gate: str
    scans: list[UploadedScanOut]
    # The scans of `scans` someone must look at (conflict, revoked).
    conflicts: list[UploadedScanOut]


class ConflictOut(msgspec.Struct, frozen=True):
    scan_id: int
    # conflict | revoked
    result: str
    ticket_id: uuid.UUID
    event_id: uuid.UUID
    seat: str | None
    # This scan: where, by which staff key, when (clamped, and as the device said), received.
    gate: str
    staff_key_id: uuid.UUID | None
    scanned_at: dt.datetime
    device_scanned_at: dt.datetime | None
    received_at: dt.datetime
    # The other side: the admission already recorded, or the revocation.
    admitted_at: dt.datetime | None
    admitted_gate: str | None
    revoked_at: dt.datetime | None


class ConflictList(msgspec.Struct, frozen=True):
    items: list[ConflictOut]


def _uploaded(scan: checkin.UploadedScan) -> UploadedScanOut:
    return UploadedScanOut(
        index=scan.index,
        result=scan.result.value,
        scanned_at=scan.scanned_at,
        ticket_id=scan.ticket_id,
        event_id=scan.event_id,
        seat=scan.seat,
        admitted_at=scan.admitted_at,
        admitted_gate=scan.admitted_gate,
        revoked_at=scan.revoked_at,
        problem=scan.problem,
        replayed=scan.replayed,
        scan_id=scan.scan_id,
    )


class CheckinController(Controller):
    path = "/staff/checkin"
    tags = ["staff", "check-in"]
    security = STAFF_SECURITY

    @post(
        "/",
        status_code=200,
        summary="Scan a ticket at a gate",
        description=(
            "Admits the ticket if its code is genuine, it is valid and not yet admitted: the first "
            "scan wins, however many gates scan it at once. A refusal is an answer, not an error: "
            "200 with `result` `already_admitted` (with `admitted_at` and `gate` of the first "
            "scan), `revoked` (refunded or cancelled; `revoked_at`) or `wrong_event` (the ticket "
            "is for another event than `event_id`); only `admitted` lets the holder in. A code "
            "that is not genuine is a problem: `ticket-token-malformed` (400), "
            "`ticket-signature-invalid` or `ticket-key-unknown` (422); a genuine code with no "
            "ticket is `ticket-not-found` (404). Every answered scan is recorded."
        ),
        opt={"roles": GATE, "audit": "checkin.scan", "audit_target": "ticket"},
    )
    async def scan(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[CheckinRequest],
    ) -> CheckinOut:
        answer = await checkin.check_in(
            db_session,
            data.token,
            gate=data.gate,
            public_keys=request.app.state.signing_keys.verifying_keys(),
            staff_key_id=staff.id,
            event_id=data.event_id,
        )
        audit_detail(request, target_id=answer.ticket_id, gate=data.gate, result=answer.result.value)
        return CheckinOut(
            result=answer.result.value,
            ticket_id=answer.ticket_id,
            order_id=answer.order_id,
            event_id=answer.event_id,
            seat=answer.seat,
            admitted_at=answer.admitted_at,
            gate=answer.admitted_gate,
            revoked_at=answer.revoked_at,
            scan_id=answer.scan_id,
        )

    @post(
        "/offline",
        status_code=200,
        summary="Upload the scans a gate made offline",
        description=(
            "For a gate that verified codes with the key set (`GET /ticket-keys`) while it had "
            "no network. At most 1000 scans; each ticket's scans count in order of `scanned_at` "
            "(the device's time, with a timezone; an admission is never dated later than now). "
            "Each scan gets a `result`: `admitted` (first; the ticket is admitted at that time "
            "and gate), `conflict` (another scan had admitted it: both sides are recorded), "
            "`revoked` (the ticket was refunded or cancelled), `invalid` (not a genuine code; "
            "`problem` says why) or `not_found`. Conflicts are also listed by "
            "`GET /staff/checkin/conflicts`. Uploading the same scans again is safe: each is "
            "answered as the first time, with `replayed: true`, and nothing changes. A bad body "
            "is 400 and nothing is recorded."
        ),
        opt={"roles": GATE, "audit": "checkin.upload", "audit_target": "gate"},
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[UploadRequest],
    ) -> UploadOut:
        uploaded = await checkin.upload_offline_scans(
            db_session,
            data.gate,
            [(scan.token, scan.scanned_at) for scan in data.scans],
            public_keys=request.app.state.signing_keys.verifying_keys(),
            staff_key_id=staff.id,
        )
        counts: dict[str, int] = {}
        for scan in uploaded.scans:
            counts[scan.result.value] = counts.get(scan.result.value, 0) + 1
        audit_detail(request, target_id=data.gate, scans=len(uploaded.scans), results=counts)
        return UploadOut(
            gate=uploaded.gate,
            scans=[_uploaded(scan) for scan in uploaded.scans],
            conflicts=[_uploaded(scan) for scan in uploaded.conflicts],
        )

    @get(
        "/conflicts",
        summary="Offline scans that conflicted, newest first",
        description=(
            "Uploaded scans of tickets another scan had already admitted (`conflict`) or that "
            "were revoked (`revoked`), each with both sides: this scan's gate and times, and the "
            "admission (`admitted_at`, `admitted_gate`) or revocation it ran into."
        ),
        opt={"roles": (*GATE, *ON_CALL)},
    )
    async def conflicts(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: Annotated[uuid.UUID | None, Parameter(description="Only this event's")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500, description="At most this many")] = 50,
    ) -> ConflictList:
        found = await checkin.list_conflicts(db_session, event_id=event_id, limit=limit)
        return ConflictList(
            items=[
                ConflictOut(
                    scan_id=c.scan_id,
                    result=c.result.value,
                    ticket_id=c.ticket_id,
                    event_id=c.event_id,
                    seat=c.seat,
                    gate=c.gate,
                    staff_key_id=c.staff_key_id,
                    scanned_at=c.scanned_at,
                    device_scanned_at=c.device_scanned_at,
                    received_at=c.received_at,
                    admitted_at=c.admitted_at,
                    admitted_gate=c.admitted_gate,
                    revoked_at=c.revoked_at,
                )
                for c in found
            ]
        )
