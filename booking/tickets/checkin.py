"""Check-in at the gates: a genuine ticket is admitted once, by whichever scan comes first.

Invariant: a ticket's ``checked_in_at``/``checked_in_gate`` are set by one guarded statement
(``UPDATE tickets … WHERE state = 'valid' AND checked_in_at IS NULL RETURNING``), never by
reading the ticket and then writing it, so any number of gates scanning the same ticket at
once admit it exactly once; the losers are told when and where it was admitted. Every scan of
a ticket that exists leaves one ``ticket_scans`` row, in the caller's transaction (verbs
never commit).

A gate that loses the network verifies codes with the published key set alone (see
``booking.tickets.signing.verify``), admits on its own judgement, and uploads its scans
later. An upload never rewrites history: a scan of a ticket that another scan had already
admitted, or of a ticket revoked by then, is recorded as a conflict (with both sides) and
listed by ``list_conflicts`` for someone to look at. Uploading the same scans again (a retry
after a lost answer) is harmless: the database knows each offline scan by its ticket, gate and
device time, and answers a repeat with the answer it gave the first time.

Both checks take every published key (``SigningKeys.verifying_keys``): during a key rotation
a code signed by an earlier key is as good as one signed by the current key.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from booking.errors import InvalidRequest, TicketNotFound, TicketTokenInvalid
from booking.tickets.models import ScanMode, ScanResult, Ticket, TicketScan, TicketState
from booking.tickets.signing import TicketClaims, verify

MAX_GATE_CHARS = 120
MAX_UPLOAD = 1000
# Device clocks can be wrong; a time outside these years is a broken clock or broken input,
# and is refused before anything is stored (it could not be read back as a datetime).
FIRST_YEAR, LAST_YEAR = 2000, 2999
# Offline results that someone must look at: listed by ``list_conflicts``.
CONFLICT_RESULTS = (ScanResult.CONFLICT, ScanResult.REVOKED)

# Every key a code may be signed with: the current one and the previous ones still trusted.
PublicKeys = Ed25519PublicKey | Iterable[Ed25519PublicKey]


@dataclass(frozen=True)
class CheckIn:
    """The answer to one online scan, for the gate device to switch on.

    ``admitted_at``/``admitted_gate`` say when and where the ticket was admitted: just now by
    this gate for ``admitted``, earlier by the first scan for ``already_admitted``, and None
    while it never was. ``revoked_at`` is set for a revoked ticket. For ``wrong_event``,
    ``event_id`` is the ticket's event and ``gate_event_id`` the one this gate admits to.
    """

    result: ScanResult
    scan_id: int
    ticket_id: uuid.UUID
    order_id: uuid.UUID
    event_id: uuid.UUID
    seat: str
    admitted_at: dt.datetime | None
    admitted_gate: str | None
    revoked_at: dt.datetime | None
    gate_event_id: uuid.UUID | None = None


class UploadResult(enum.StrEnum):
    ADMITTED = "admitted"
    # Already admitted by another scan (online, or uploaded earlier): both sides are kept.
    CONFLICT = "conflict"
    # The ticket was revoked (its order refunded or cancelled): a conflict as well.
    REVOKED = "revoked"
    # The code does not prove a ticket: forged, altered, damaged, or an unknown key.
    INVALID = "invalid"
    # A genuine code whose ticket does not exist here.
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class UploadedScan:
    """What became of one uploaded scan.

    ``index`` is its position in the upload; ``scanned_at`` the device's time as uploaded.
    ``admitted_at``/``admitted_gate`` are the ticket's admission: this scan's (its time,
    clamped to not later than its receipt) when ``admitted``, the earlier scan's when a
    ``conflict``. ``replayed`` means this very scan had been uploaded before and the answer
    is the one given then. ``problem`` names why an ``invalid`` or ``not_found`` code was
    refused (the error code the online check would answer with).
    """

    index: int
    result: UploadResult
    scanned_at: dt.datetime
    ticket_id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    seat: str | None = None
    scan_id: int | None = None
    admitted_at: dt.datetime | None = None
    admitted_gate: str | None = None
    revoked_at: dt.datetime | None = None
    problem: str | None = None
    replayed: bool = False


@dataclass(frozen=True)
class Upload:
    gate: str
    scans: list[UploadedScan]  # in the order they were uploaded

    @property
    def conflicts(self) -> list[UploadedScan]:
        return [s for s in self.scans if s.result in (UploadResult.CONFLICT, UploadResult.REVOKED)]


@dataclass(frozen=True)
class Conflict:
    """An offline scan that could not be accepted as an admission, with both sides: this
    scan (``gate``, ``scanned_at``, the device's own ``device_scanned_at``, when it was
    ``received_at`` and by which staff key) and what the ticket had by then (the admission's
    ``admitted_at``/``admitted_gate``, or ``revoked_at``)."""

    scan_id: int
    result: ScanResult
    ticket_id: uuid.UUID
    event_id: uuid.UUID
    seat: str | None
    gate: str
    staff_key_id: uuid.UUID | None
    scanned_at: dt.datetime
    device_scanned_at: dt.datetime | None
    received_at: dt.datetime
    admitted_at: dt.datetime | None
    admitted_gate: str | None
    revoked_at: dt.datetime | None


def _check_gate(gate: str) -> None:
    """Raises: InvalidRequest (empty, too long, or not storable)."""
    if not gate.strip():
        raise InvalidRequest("gate names the gate scanning; it may not be empty.")
    if len(gate) > MAX_GATE_CHARS:
        raise InvalidRequest(f"gate is at most {MAX_GATE_CHARS} characters.")
    if "\x00" in gate:
        raise InvalidRequest("gate contains a NUL character.")


def _check_time(index: int, at: dt.datetime) -> None:
    """Raises: InvalidRequest (no timezone, or outside the years a real clock shows)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidRequest(f"scans[{index}].scanned_at must include a timezone (Z or +01:00).")
    if not FIRST_YEAR <= at.year <= LAST_YEAR:
        raise InvalidRequest(
            f"scans[{index}].scanned_at must be between the years {FIRST_YEAR} and {LAST_YEAR}."
        )


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def _matches(claims: TicketClaims) -> list[Any]:
    # A genuine token names its ticket, order and event; all three must still agree.
    return [
        Ticket.id == claims.ticket_id,
        Ticket.order_id == claims.order_id,
        Ticket.event_id == claims.event_id,
    ]


async def _admit(session: AsyncSession, claims: TicketClaims, gate: str, at: Any) -> dt.datetime | None:
    """The one guarded statement that admits: the admission time, or None when the ticket is
    not there to admit (missing, revoked, or admitted already)."""
    admitted = await session.execute(
        update(Ticket)
        .where(*_matches(claims), Ticket.state == TicketState.VALID, Ticket.checked_in_at.is_(None))
        .values(checked_in_at=at, checked_in_gate=gate)
        .returning(Ticket.checked_in_at)
        .execution_options(synchronize_session=False)
    )
    return admitted.scalar_one_or_none()


async def _ticket(
    session: AsyncSession, claims: TicketClaims
) -> Row[TicketState, dt.datetime | None, dt.datetime | None, str | None] | None:
    """The ticket's state now: why a scan was not an admission."""
    found = await session.execute(
        select(Ticket.state, Ticket.revoked_at, Ticket.checked_in_at, Ticket.checked_in_gate).where(
            *_matches(claims)
        )
    )
    return found.one_or_none()


async def check_in(
    session: AsyncSession,
    token: str,
    *,
    gate: str,
    public_keys: PublicKeys,
    staff_key_id: uuid.UUID | None,
    event_id: uuid.UUID | None = None,
) -> CheckIn:
    """Scan ``token`` at ``gate`` now: admit its ticket if it is valid and not yet admitted.

    With ``event_id`` (the gate admits to that event only), a ticket for another event is
    ``wrong_event`` and nothing is admitted. Otherwise the answer is ``admitted``,
    ``already_admitted`` (with the first admission's time and gate) or ``revoked`` (refunded
    or cancelled; with when). Writes one ``ticket_scans`` row; does not commit.

    Raises:
        InvalidRequest: ``gate`` is empty, longer than 120 characters or not storable.
        TicketTokenMalformed, TicketKeyUnknown, TicketSignatureInvalid: the code is not a
            genuine ticket code, or signed by a key not among ``public_keys`` (nothing is
            written).
        TicketNotFound: a genuine code whose ticket does not exist (nothing is written).
    """
    _check_gate(gate)
    claims = verify(token, public_keys)
    admitted_at = None
    if event_id is None or claims.event_id == event_id:
        admitted_at = await _admit(session, claims, gate, func.now())
    if admitted_at is not None:
        result, admitted_gate, revoked_at = ScanResult.ADMITTED, gate, None
    else:
        ticket = await _ticket(session, claims)
        if ticket is None:
            raise TicketNotFound()
        admitted_at, admitted_gate, revoked_at = (
            ticket.checked_in_at,
            ticket.checked_in_gate,
            ticket.revoked_at,
        )
        if event_id is not None and claims.event_id != event_id:
            result = ScanResult.WRONG_EVENT
        elif ticket.state == TicketState.REVOKED:
            result = ScanResult.REVOKED
        else:
            result = ScanResult.ALREADY_ADMITTED
    details: dict[str, Any] = {
        "seat": claims.seat,
        "admitted_at": _iso(admitted_at),
        "admitted_gate": admitted_gate,
        "revoked_at": _iso(revoked_at),
    }
    if event_id is not None:
        details["gate_event_id"] = str(event_id)
    scan_id = await session.scalar(
        insert(TicketScan)
        .values(
            ticket_id=claims.ticket_id,
            event_id=claims.event_id,
            gate=gate,
            staff_key_id=staff_key_id,
            mode=ScanMode.ONLINE,
            scanned_at=func.now(),
            result=result,
            details=details,
        )
        .returning(TicketScan.id)
    )
    assert scan_id is not None
    return CheckIn(
        result=result,
        scan_id=scan_id,
        ticket_id=claims.ticket_id,
        order_id=claims.order_id,
        event_id=claims.event_id,
        seat=claims.seat,
        admitted_at=admitted_at,
        admitted_gate=admitted_gate,
        revoked_at=revoked_at,
        gate_event_id=event_id,
    )


def _replay(index: int, scanned_at: dt.datetime, claims: TicketClaims, row: TicketScan) -> UploadedScan:
    details = row.details
    return UploadedScan(
        index=index,
        result=UploadResult(row.result.value),
        scanned_at=scanned_at,
        ticket_id=claims.ticket_id,
        event_id=claims.event_id,
        seat=claims.seat,
        scan_id=row.id,
        admitted_at=_time(details.get("admitted_at")),
        admitted_gate=details.get("admitted_gate"),
        revoked_at=_time(details.get("revoked_at")),
        replayed=True,
    )


async def _upload_one(
    session: AsyncSession,
    index: int,
    claims: TicketClaims,
    scanned_at: dt.datetime,
    *,
    gate: str,
    staff_key_id: uuid.UUID | None,
) -> UploadedScan:
    # The device's time, but never later than now: a clock running fast must not date an
    # admission in the future.
    at = func.least(scanned_at, func.now())
    admitted_at = await _admit(session, claims, gate, at)
    details: dict[str, Any] = {"seat": claims.seat}
    if admitted_at is not None:
        result, admitted_gate, revoked_at = ScanResult.ADMITTED, gate, None
    else:
        ticket = await _ticket(session, claims)
        if ticket is None:
            return UploadedScan(
                index=index,
                result=UploadResult.NOT_FOUND,
                scanned_at=scanned_at,
                ticket_id=claims.ticket_id,
                event_id=claims.event_id,
                seat=claims.seat,
                problem=TicketNotFound.code,
            )
        admitted_at, admitted_gate, revoked_at = (
            ticket.checked_in_at,
            ticket.checked_in_gate,
            ticket.revoked_at,
        )
        if ticket.state == TicketState.REVOKED:
            # Revoked after the scan is reported too: someone went in on a ticket that was
            # then refunded.
            result = ScanResult.REVOKED
            details["revoked_before_scan"] = revoked_at is not None and revoked_at <= scanned_at
        else:
            result = ScanResult.CONFLICT
    details.update(admitted_at=_iso(admitted_at), admitted_gate=admitted_gate, revoked_at=_iso(revoked_at))
    inserted = await session.execute(
        insert(TicketScan)
        .values(
            ticket_id=claims.ticket_id,
            event_id=claims.event_id,
            gate=gate,
            staff_key_id=staff_key_id,
            mode=ScanMode.OFFLINE,
            scanned_at=at,
            device_scanned_at=scanned_at,
            result=result,
            details=details,
        )
        .on_conflict_do_nothing(index_elements=["ticket_id", "gate", "device_scanned_at"])
        .returning(TicketScan.id)
    )
    scan_id = inserted.scalar_one_or_none()
    if scan_id is None:
        # This scan was uploaded before (or by a concurrent upload that committed first):
        # answer as then. Its first upload admitted or found the ticket admitted or revoked,
        # all final, so the guarded statement above cannot have admitted it again.
        if result == ScanResult.ADMITTED:
            raise RuntimeError(f"ticket {claims.ticket_id} admitted by a repeated scan")
        stored = await session.scalar(
            select(TicketScan).where(
                TicketScan.ticket_id == claims.ticket_id,
                TicketScan.gate == gate,
                TicketScan.device_scanned_at == scanned_at,
            )
        )
        assert stored is not None
        return _replay(index, scanned_at, claims, stored)
    return UploadedScan(
        index=index,
        result=UploadResult(result.value),
        scanned_at=scanned_at,
        ticket_id=claims.ticket_id,
        event_id=claims.event_id,
        seat=claims.seat,
        scan_id=scan_id,
        admitted_at=admitted_at,
        admitted_gate=admitted_gate,
        revoked_at=revoked_at,
    )


async def upload_offline_scans(
    session: AsyncSession,
    gate: str,
    scans: Sequence[tuple[str, dt.datetime]],
    *,
    public_keys: PublicKeys,
    staff_key_id: uuid.UUID | None,
) -> Upload:
    """Record the ``(token, scanned_at)`` scans a gate made while offline, and admit those
    that were first; the answers come back in the order given.

    Each ticket's scans are taken in order of ``scanned_at``: the earliest not-yet-admitted
    scan of a valid ticket admits it, with ``checked_in_at`` = its device time (clamped to not
    later than now) and this gate. A scan of a ticket that another scan had admitted is a
    ``conflict``; of a revoked ticket, ``revoked``: both are recorded with the ticket's side
    and listed by ``list_conflicts``. A code that is not genuine is ``invalid`` and a genuine
    one with no ticket ``not_found``, neither recorded (there is no ticket to record against).
    A scan already uploaded (same ticket, gate and ``scanned_at``) is answered as the first
    time, marked ``replayed``, and changes nothing. Does not commit.

    Tickets are taken in one fixed order (by ticket id), so uploads running at the same time
    lock tickets in the same order and cannot deadlock each other.

    Raises:
        InvalidRequest: ``gate`` is not a usable name, more than ``MAX_UPLOAD`` scans, or a
            ``scanned_at`` without a timezone or outside the years 2000-2999; checked before
            anything is written.
    """
    _check_gate(gate)
    if len(scans) > MAX_UPLOAD:
        raise InvalidRequest(f"Upload at most {MAX_UPLOAD} scans at once.")
    for index, (_, scanned_at) in enumerate(scans):
        _check_time(index, scanned_at)

    answers: dict[int, UploadedScan] = {}
    genuine: list[tuple[TicketClaims, dt.datetime, int]] = []
    for index, (token, scanned_at) in enumerate(scans):
        try:
            genuine.append((verify(token, public_keys), scanned_at, index))
        except TicketTokenInvalid as error:
            answers[index] = UploadedScan(
                index=index, result=UploadResult.INVALID, scanned_at=scanned_at, problem=error.code
            )
    genuine.sort(key=lambda scan: (scan[0].ticket_id, scan[1], scan[2]))
    for claims, scanned_at, index in genuine:
        answers[index] = await _upload_one(
            session, index, claims, scanned_at, gate=gate, staff_key_id=staff_key_id
        )
    return Upload(gate=gate, scans=[answers[index] for index in range(len(scans))])


async def list_conflicts(
    session: AsyncSession, *, event_id: uuid.UUID | None = None, limit: int = 50
) -> list[Conflict]:
    """Offline scans recorded as ``conflict`` or ``revoked``, newest received first; with
    ``event_id``, that event's only."""
    query = (
        select(TicketScan)
        .where(TicketScan.mode == ScanMode.OFFLINE, TicketScan.result.in_(CONFLICT_RESULTS))
        .order_by(TicketScan.received_at.desc(), TicketScan.id.desc())
        .limit(limit)
    )
    if event_id is not None:
        query = query.where(TicketScan.event_id == event_id)
    return [
        Conflict(
            scan_id=row.id,
            result=row.result,
            ticket_id=row.ticket_id,
            event_id=row.event_id,
            seat=row.details.get("seat"),
            gate=row.gate,
            staff_key_id=row.staff_key_id,
            scanned_at=row.scanned_at,
            device_scanned_at=row.device_scanned_at,
            received_at=row.received_at,
            admitted_at=_time(row.details.get("admitted_at")),
            admitted_gate=row.details.get("admitted_gate"),
            revoked_at=_time(row.details.get("revoked_at")),
        )
        for row in await session.scalars(query)
    ]
