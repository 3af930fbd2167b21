"""Gates race to admit the same ticket: it is admitted exactly once.

Each trial sends GATES concurrent sessions, one per gate, at one ticket at the same instant;
TRIALS tickets in all. Exactly one gate is told ``admitted``, every other one
``already_admitted`` with the winner's time and gate, and the ticket row and the scan log
agree. The negative control drives the same harness with a read-then-write admission (test
code only) and must admit some ticket more than once, which proves the race is really run.

Gates coming back online upload their scans at the same moment, each in its own order, one
of them twice at once: every ticket is still admitted once, by a recorded scan, every other
scan is a conflict naming that admission, the repeated upload is answered alike, and no
upload deadlocks another. Its control processes each upload in the order given (test code
only) and must deadlock, which proves the fixed lock order is what prevents it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.db import make_async_engine, make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.orders.service import confirm_hold
from booking.tickets import checkin
from booking.tickets.models import ScanResult, Ticket, TicketScan
from booking.tickets.service import ticket_token
from booking.tickets.signing import verify
from tests.factories import make_event, make_fan

GATES = 20
TRIALS = 30
UPLOADERS = 8
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


@dataclass(frozen=True)
class Answer:
    gate: str
    result: str
    admitted_at: dt.datetime | None
    admitted_gate: str | None


# scan(session, token, gate, public key) -> what the gate was told
Scan = Callable[[AsyncSession, str, str, Ed25519PublicKey], Awaitable[Answer]]


async def widen_race(session: AsyncSession) -> None:
    """Sleep inside the critical section: the scan is done, the transaction still open."""
    await session.execute(text("SELECT pg_sleep(0.003)"))


async def guarded_scan(session: AsyncSession, token: str, gate: str, public: Ed25519PublicKey) -> Answer:
    answer = await checkin.check_in(session, token, gate=gate, public_keys=public, staff_key_id=None)
    await widen_race(session)
    return Answer(gate, answer.result.value, answer.admitted_at, answer.admitted_gate)


async def read_then_write_scan(
    session: AsyncSession, token: str, gate: str, public: Ed25519PublicKey
) -> Answer:
    """The bug this test exists to catch: look at the ticket, then admit it unguarded."""
    claims = verify(token, public)
    seen = (
        await session.execute(
            select(Ticket.checked_in_at, Ticket.checked_in_gate).where(Ticket.id == claims.ticket_id)
        )
    ).one()
    if seen.checked_in_at is not None:
        return Answer(gate, ScanResult.ALREADY_ADMITTED.value, seen.checked_in_at, seen.checked_in_gate)
    await widen_race(session)
    admitted_at = await session.scalar(
        update(Ticket)
        .where(Ticket.id == claims.ticket_id)
        .values(checked_in_at=func.now(), checked_in_gate=gate)
        .returning(Ticket.checked_in_at)
    )
    return Answer(gate, ScanResult.ADMITTED.value, admitted_at, gate)


@pytest.fixture
async def race_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    # One connection per gate, so every gate is inside its transaction at the same time.
    engine = make_async_engine(database_url, pool_size=GATES + 2, max_overflow=0, pool_timeout=60)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _sold_tickets(sessions: async_sessionmaker[AsyncSession], count: int) -> dict[uuid.UUID, str]:
    """``count`` valid tickets of one order, by id, with their codes."""
    async with sessions() as session:
        event = await make_event(session, seats=count, ga_capacity=1)
        fan = Owner(fan_id=await make_fan(session))
        hold = await holds.create_hold(
            session,
            owner=fan,
            event_id=event.event_id,
            selection=SeatSelection(tuple(event.seat_ids)),
            policy=HoldPolicy(tickets_per_fan=count),
        )
        confirmation = await confirm_hold(session, hold_id=hold.id)
        await session.commit()
        ids = (await session.scalars(select(Ticket.id).where(Ticket.order_id == confirmation.order_id))).all()
        return {ticket_id: await ticket_token(session, ticket_id, signing_key=KEY) for ticket_id in ids}


async def _trial(sessions: async_sessionmaker[AsyncSession], scan: Scan, token: str) -> list[Answer]:
    """Every gate scans ``token`` at once: each takes its connection first, then all are
    released together."""
    start = asyncio.Barrier(GATES)

    async def gate(number: int) -> Answer | None:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
            await start.wait()
            try:
                answer = await scan(session, token, f"gate-{number:02d}", PUBLIC)
                await session.commit()
                return answer
            except DBAPIError:
                # Only the read-then-write control may meet one; the guarded scan never does.
                if scan is guarded_scan:
                    raise
                await session.rollback()
                return None

    answers = await asyncio.gather(*(gate(n) for n in range(GATES)))
    return [answer for answer in answers if answer is not None]


async def _violations(
    sessions: async_sessionmaker[AsyncSession], ticket_id: uuid.UUID, answers: list[Answer]
) -> list[str]:
    """What a correct check-in never shows: other than one admission, a loser told anything but
    the winner's time and gate, or a ticket row that disagrees with the winner."""
    problems = []
    admitted = [a for a in answers if a.result == ScanResult.ADMITTED.value]
    if len(admitted) != 1:
        problems.append(f"ticket {ticket_id}: {len(admitted)} gates were told 'admitted'")
    async with sessions() as session:
        row = (
            await session.execute(
                select(Ticket.checked_in_at, Ticket.checked_in_gate).where(Ticket.id == ticket_id)
            )
        ).one()
    for winner in admitted:
        if (row.checked_in_at, row.checked_in_gate) != (winner.admitted_at, winner.gate):
            problems.append(
                f"ticket {ticket_id}: the row says {row.checked_in_gate}, {winner.gate} was told it won"
            )
    if len(admitted) == 1:
        winner = admitted[0]
        for loser in answers:
            if loser is winner:
                continue
            told = (loser.result, loser.admitted_at, loser.admitted_gate)
            if told != (ScanResult.ALREADY_ADMITTED.value, winner.admitted_at, winner.gate):
                problems.append(f"ticket {ticket_id}: {loser.gate} was told {told}")
    return problems


async def test_twenty_gates_one_ticket_admitted_exactly_once(race_engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(race_engine)
    tickets = await _sold_tickets(sessions, TRIALS)
    for ticket_id, token in tickets.items():
        answers = await _trial(sessions, guarded_scan, token)
        assert len(answers) == GATES
        assert await _violations(sessions, ticket_id, answers) == []
        async with sessions() as session:
            logged = (
                await session.execute(
                    select(TicketScan.result, func.count())
                    .where(TicketScan.ticket_id == ticket_id)
                    .group_by(TicketScan.result)
                )
            ).all()
        assert dict(logged) == {ScanResult.ADMITTED: 1, ScanResult.ALREADY_ADMITTED: GATES - 1}


async def test_negative_control_read_then_write_admits_twice(race_engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(race_engine)
    tickets = await _sold_tickets(sessions, TRIALS)
    most = 0
    found = []
    for ticket_id, token in tickets.items():
        answers = await _trial(sessions, read_then_write_scan, token)
        most = max(most, sum(a.result == ScanResult.ADMITTED.value for a in answers))
        found += await _violations(sessions, ticket_id, answers)
    assert most > 1, "the read-then-write admission never admitted twice: this test cannot see the race"
    assert found


# upload(session, gate, scans) -> one answer per scan, in the order given
Upload = Callable[[AsyncSession, str, list[tuple[str, dt.datetime]]], Awaitable[list[checkin.UploadedScan]]]


async def guarded_upload(
    session: AsyncSession, gate: str, scans: list[tuple[str, dt.datetime]]
) -> list[checkin.UploadedScan]:
    uploaded = await checkin.upload_offline_scans(session, gate, scans, public_keys=PUBLIC, staff_key_id=None)
    return uploaded.scans


async def upload_in_given_order(
    session: AsyncSession, gate: str, scans: list[tuple[str, dt.datetime]]
) -> list[checkin.UploadedScan]:
    """The same steps per scan, but tickets locked in whatever order the device sent them."""
    return [
        await checkin._upload_one(session, index, verify(token, PUBLIC), at, gate=gate, staff_key_id=None)
        for index, (token, at) in enumerate(scans)
    ]


def _batches(tokens: list[str], rng: random.Random) -> dict[str, list[tuple[str, dt.datetime]]]:
    """Each gate scanned every ticket once, at its own times, and sends them in its own order."""
    base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    batches = {}
    for number in range(UPLOADERS):
        scans = [(token, base + dt.timedelta(seconds=rng.randint(0, 600))) for token in tokens]
        rng.shuffle(scans)
        batches[f"gate-{number:02d}"] = scans
    return batches


async def _upload_round(
    sessions: async_sessionmaker[AsyncSession],
    upload: Upload,
    batches: dict[str, list[tuple[str, dt.datetime]]],
    *,
    tolerate_db_errors: bool = False,
) -> tuple[dict[str, list[list[checkin.UploadedScan]]], int]:
    """Every upload at once, the first gate's twice; returns the answers by gate and how many
    uploads failed with a database error (a deadlock)."""
    # Taken one by one so that, should one fail, the others keep their own outcome.
    start = asyncio.Barrier(UPLOADERS + 1)
    senders = [*batches, next(iter(batches))]

    async def send(gate: str) -> list[checkin.UploadedScan] | None:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
            await start.wait()
            try:
                answers = await upload(session, gate, batches[gate])
                await session.commit()
                return answers
            except DBAPIError:
                if not tolerate_db_errors:
                    raise
                await session.rollback()
                return None

    results = await asyncio.gather(*(send(gate) for gate in senders))
    by_gate: dict[str, list[list[checkin.UploadedScan]]] = {}
    for gate, answers in zip(senders, results, strict=True):
        if answers is not None:
            by_gate.setdefault(gate, []).append(answers)
    return by_gate, sum(answers is None for answers in results)


async def test_gates_uploading_at_once_admit_each_ticket_once_and_report_the_rest(
    race_engine: AsyncEngine,
) -> None:
    sessions = make_sessionmaker(race_engine)
    tickets = await _sold_tickets(sessions, TRIALS)
    batches = _batches(list(tickets.values()), random.Random(20261128))
    by_gate, failed = await _upload_round(sessions, guarded_upload, batches)
    assert failed == 0
    twice = by_gate[next(iter(batches))]
    assert len(twice) == 2
    assert [(a.result, a.scan_id) for a in twice[0]] == [(a.result, a.scan_id) for a in twice[1]]
    assert sorted(a.replayed for a in twice[0] + twice[1]) == [False] * TRIALS + [True] * TRIALS

    async with sessions() as session:
        admissions = {
            row.id: (row.checked_in_at, row.checked_in_gate)
            for row in await session.execute(select(Ticket.id, Ticket.checked_in_at, Ticket.checked_in_gate))
        }
        scans = (await session.execute(select(TicketScan))).scalars().all()
    assert len(scans) == TRIALS * UPLOADERS
    for ticket_id, admission in admissions.items():
        admitted = [s for s in scans if s.ticket_id == ticket_id and s.result == ScanResult.ADMITTED]
        assert [(s.scanned_at, s.gate) for s in admitted] == [admission], ticket_id
    for gate, uploads in by_gate.items():
        for answer in uploads[0]:
            assert answer.ticket_id is not None
            assert (answer.admitted_at, answer.admitted_gate) == admissions[answer.ticket_id], gate
            expected = ScanResult.ADMITTED if answer.admitted_gate == gate else ScanResult.CONFLICT
            assert answer.result.value == expected.value, (gate, answer)


async def test_negative_control_uploads_locking_in_the_order_given_deadlock(race_engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(race_engine)
    tickets = await _sold_tickets(sessions, TRIALS)
    rng = random.Random(7)
    deadlocked = 0
    for _ in range(3):
        async with sessions() as session:
            await session.execute(text("UPDATE tickets SET checked_in_at = NULL, checked_in_gate = NULL"))
            await session.execute(text("DELETE FROM ticket_scans"))
            await session.commit()
        _, failed = await _upload_round(
            sessions, upload_in_given_order, _batches(list(tickets.values()), rng), tolerate_db_errors=True
        )
        deadlocked += failed
    assert deadlocked, (
        "uploads locking in any order never deadlocked: this test cannot see a broken lock order"
    )
