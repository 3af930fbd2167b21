"""Signed tickets against real PostgreSQL: tokens of real sold tickets, the offline and online
checks, who may see a ticket, and what the QR code and the PDF carry."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.errors import (
    TicketKeyUnknown,
    TicketNotFound,
    TicketRevoked,
    TicketSignatureInvalid,
    TicketTokenInvalid,
    TicketTokenMalformed,
)
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection, Selection
from booking.keys import SigningKeys, load_signing_keys
from booking.orders.service import confirm_hold, refund_order
from booking.settings import Settings
from booking.tickets.models import Ticket, TicketState
from booking.tickets.render import QR_BORDER, QR_ERROR_LEVEL, QR_MASK, render_qr_svg, render_ticket_pdf
from booking.tickets.service import check_ticket, ticket_token, ticket_view
from booking.tickets.signing import key_id, sign_ticket, verify
from tests.factories import SmallEvent, make_event, make_fan


@dataclass(frozen=True)
class Sale:
    fan_id: uuid.UUID
    order_id: uuid.UUID
    ticket_ids: list[uuid.UUID]  # in the order of the units sold


@pytest.fixture
def keys(settings: Settings) -> SigningKeys:
    return load_signing_keys(settings)


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=4)


async def _buy(session: AsyncSession, event: SmallEvent, selection: Selection) -> Sale:
    fan_id = await make_fan(session)
    hold = await holds.create_hold(
        session, owner=Owner(fan_id=fan_id), event_id=event.event_id, selection=selection, policy=HoldPolicy()
    )
    confirmation = await confirm_hold(session, hold_id=hold.id)
    await session.commit()
    assert confirmation.order_id is not None
    ticket_ids = (
        await session.scalars(
            select(Ticket.id).where(Ticket.order_id == confirmation.order_id).order_by(Ticket.unit_id)
        )
    ).all()
    return Sale(fan_id, confirmation.order_id, list(ticket_ids))


@pytest.fixture
async def seated(session: AsyncSession, event: SmallEvent) -> Sale:
    return await _buy(session, event, SeatSelection((event.seat_ids[0], event.seat_ids[1])))


async def test_a_sold_seat_gets_a_token_that_verifies_offline_with_its_claims(
    session: AsyncSession, event: SmallEvent, seated: Sale, settings: Settings, keys: SigningKeys
) -> None:
    view = await ticket_view(session, seated.ticket_ids[1], seated.fan_id, signing_key=keys.ticket_key)
    assert view.token is not None
    # Offline: nothing but the token and the public key.
    claims = verify(view.token, keys.ticket_public_key)
    assert claims.ticket_id == seated.ticket_ids[1]
    assert claims.order_id == seated.order_id
    assert claims.event_id == event.event_id
    assert claims.seat == "Stalls, Row A, Seat 2"
    assert claims.kid == key_id(keys.ticket_public_key)
    issued_at = await session.scalar(select(Ticket.issued_at).where(Ticket.id == seated.ticket_ids[1]))
    assert issued_at is not None
    assert claims.issued_at == issued_at.replace(microsecond=0)
    # After a restart the key comes back from its PEM file, verifies the code and makes the
    # very same one again: one ticket, one code.
    reloaded = load_signing_keys(settings)
    assert verify(view.token, reloaded.ticket_public_key) == claims
    assert await ticket_token(session, seated.ticket_ids[1], signing_key=reloaded.ticket_key) == view.token
    assert len(view.token) < 250


async def test_the_fan_sees_everything_an_api_shows(
    session: AsyncSession, event: SmallEvent, seated: Sale, keys: SigningKeys
) -> None:
    view = await ticket_view(session, seated.ticket_ids[0], seated.fan_id, signing_key=keys.ticket_key)
    assert view.ticket_id == seated.ticket_ids[0]
    assert view.order_id == seated.order_id
    assert view.event_id == event.event_id
    assert view.state == TicketState.VALID
    assert (view.event_title, view.performer) == ("Test Night", "The Testers")
    assert (view.venue_name, view.venue_city) == ("Test Hall", "Testville")
    assert view.seat == "Stalls, Row A, Seat 1"
    assert view.timezone == "Europe/London"
    assert view.local_starts_at == view.starts_at
    assert str(view.local_starts_at.tzinfo) == "Europe/London"


async def test_a_ga_ticket_names_its_tier(
    session: AsyncSession, event: SmallEvent, keys: SigningKeys
) -> None:
    sale = await _buy(session, event, GASelection(event.ga_tier_id, 1))
    view = await ticket_view(session, sale.ticket_ids[0], sale.fan_id, signing_key=keys.ticket_key)
    assert view.seat == "Standing"
    assert view.token is not None
    assert verify(view.token, keys.ticket_public_key).seat == "Standing"


# --- What a forger or a damaged screen can do to a genuine code -----------------------------


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims_unverified(token: str) -> dict[str, Any]:
    """The claims read without checking the signature: where a forger starts from."""
    _, payload, _ = token.split(".")
    _, ticket_id, order_id, event_id, seat, issued_at = msgspec.msgpack.decode(_b64decode(payload))
    return {
        "ticket_id": uuid.UUID(bytes=ticket_id),
        "order_id": uuid.UUID(bytes=order_id),
        "event_id": uuid.UUID(bytes=event_id),
        "seat": seat,
        "issued_at": dt.datetime.fromtimestamp(issued_at, dt.UTC),
    }


def _forged_with_own_key(token: str, keys: SigningKeys) -> str:
    return sign_ticket(Ed25519PrivateKey.generate(), **_claims_unverified(token))


def _forged_under_our_key_id(token: str, keys: SigningKeys) -> str:
    _, payload, signature = _forged_with_own_key(token, keys).split(".")
    return f"{key_id(keys.ticket_public_key)}.{payload}.{signature}"


def _one_payload_character_changed(token: str, keys: SigningKeys) -> str:
    kid, payload, signature = token.split(".")
    middle = len(payload) // 2
    replacement = "A" if payload[middle] != "A" else "B"
    return f"{kid}.{payload[:middle]}{replacement}{payload[middle + 1 :]}.{signature}"


def _better_seat_same_signature(token: str, keys: SigningKeys) -> str:
    kid, payload, signature = token.split(".")
    fields = msgspec.msgpack.decode(_b64decode(payload))
    fields[4] = "Stalls, Row A, Seat 6"
    return f"{kid}.{_b64encode(msgspec.msgpack.encode(fields))}.{signature}"


def _signature_truncated(token: str, keys: SigningKeys) -> str:
    return token[:-10]


def _cut_in_half(token: str, keys: SigningKeys) -> str:
    return token[: len(token) // 2]


def _garbage(token: str, keys: SigningKeys) -> str:
    return "not a ticket"


def _three_garbage_segments(token: str, keys: SigningKeys) -> str:
    return "a.b.c"


def _empty(token: str, keys: SigningKeys) -> str:
    return ""


Tamper = Callable[[str, SigningKeys], str]


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (_forged_with_own_key, TicketKeyUnknown),
        (_forged_under_our_key_id, TicketSignatureInvalid),
        (_one_payload_character_changed, TicketSignatureInvalid),
        (_better_seat_same_signature, TicketSignatureInvalid),
        (_signature_truncated, TicketTokenMalformed),
        (_cut_in_half, TicketTokenMalformed),
        (_garbage, TicketTokenMalformed),
        (_three_garbage_segments, TicketTokenMalformed),
        (_empty, TicketTokenMalformed),
    ],
)
async def test_a_tampered_code_fails_offline_and_online_with_its_reason(
    session: AsyncSession, seated: Sale, keys: SigningKeys, tamper: Tamper, error: type[TicketTokenInvalid]
) -> None:
    token = await ticket_token(session, seated.ticket_ids[0], signing_key=keys.ticket_key)
    tampered = tamper(token, keys)
    assert tampered != token
    with pytest.raises(error) as caught:
        verify(tampered, keys.ticket_public_key)
    assert type(caught.value) is error
    assert caught.value.code == error.code
    with pytest.raises(error):
        await check_ticket(session, tampered, keys.ticket_public_key)


async def test_a_code_from_a_rotated_away_key_is_refused(
    session: AsyncSession, seated: Sale, keys: SigningKeys, settings: Settings
) -> None:
    old_token = await ticket_token(session, seated.ticket_ids[0], signing_key=keys.ticket_key)
    rotated = load_signing_keys(settings.model_copy(update={"data_dir": settings.data_dir / "rotated"}))
    assert key_id(rotated.ticket_public_key) != key_id(keys.ticket_public_key)
    new_token = await ticket_token(session, seated.ticket_ids[0], signing_key=rotated.ticket_key)

    # While both keys are trusted, old and new codes pass; each names its key.
    both = [rotated.ticket_public_key, keys.ticket_public_key]
    assert verify(old_token, both).kid == key_id(keys.ticket_public_key)
    assert verify(new_token, both).kid == key_id(rotated.ticket_public_key)
    assert verify(old_token, both).ticket_id == verify(new_token, both).ticket_id
    # Once the old key is retired, its codes are refused, offline and online.
    with pytest.raises(TicketKeyUnknown):
        verify(old_token, rotated.ticket_public_key)
    with pytest.raises(TicketKeyUnknown):
        await check_ticket(session, old_token, [rotated.ticket_public_key])


# --- The online check: revocation ---------------------------------------------------------


async def test_a_refunded_orders_tickets_are_reported_revoked(
    session: AsyncSession, seated: Sale, keys: SigningKeys
) -> None:
    tokens = [
        await ticket_token(session, ticket_id, signing_key=keys.ticket_key) for ticket_id in seated.ticket_ids
    ]
    before = await check_ticket(session, tokens[0], keys.ticket_public_key)
    assert before.state == TicketState.VALID
    assert before.admissible
    assert before.revoked_at is None
    assert before.claims.ticket_id == seated.ticket_ids[0]

    assert await refund_order(session, order_id=seated.order_id)
    await session.commit()

    for token, ticket_id in zip(tokens, seated.ticket_ids, strict=True):
        # Offline the signature is still genuine: revocation is only visible online.
        assert verify(token, keys.ticket_public_key).ticket_id == ticket_id
        after = await check_ticket(session, token, keys.ticket_public_key)
        assert after.state == TicketState.REVOKED
        assert not after.admissible
        assert after.revoked_at is not None

    view = await ticket_view(session, seated.ticket_ids[0], seated.fan_id, signing_key=keys.ticket_key)
    assert view.state == TicketState.REVOKED
    assert view.token is None  # no fresh code for a refunded ticket
    with pytest.raises(TicketRevoked):
        await ticket_token(session, seated.ticket_ids[0], signing_key=keys.ticket_key)
    with pytest.raises(TicketRevoked):
        render_ticket_pdf(view)


async def test_a_genuine_code_for_no_existing_ticket_is_not_found(
    session: AsyncSession, seated: Sale, keys: SigningKeys
) -> None:
    token = await ticket_token(session, seated.ticket_ids[0], signing_key=keys.ticket_key)
    claims = _claims_unverified(token)
    # Signed with our own key, so only the database can tell these apart from real tickets.
    unknown_ticket = sign_ticket(keys.ticket_key, **{**claims, "ticket_id": uuid.uuid4()})
    other_event = sign_ticket(keys.ticket_key, **{**claims, "event_id": uuid.uuid4()})
    for token in (unknown_ticket, other_event):
        verify(token, keys.ticket_public_key)
        with pytest.raises(TicketNotFound):
            await check_ticket(session, token, keys.ticket_public_key)


# --- Who may see a ticket ------------------------------------------------------------------


async def test_another_fans_ticket_looks_exactly_like_a_missing_one(
    session: AsyncSession, seated: Sale, keys: SigningKeys
) -> None:
    stranger = await make_fan(session)
    with pytest.raises(TicketNotFound) as someone_elses:
        await ticket_view(session, seated.ticket_ids[0], stranger, signing_key=keys.ticket_key)
    with pytest.raises(TicketNotFound) as missing:
        await ticket_view(session, uuid.uuid4(), seated.fan_id, signing_key=keys.ticket_key)
    assert type(someone_elses.value) is type(missing.value)
    assert (someone_elses.value.code, someone_elses.value.detail, someone_elses.value.extra) == (
        missing.value.code,
        missing.value.detail,
        missing.value.extra,
    )
    with pytest.raises(TicketNotFound):
        await ticket_token(session, uuid.uuid4(), signing_key=keys.ticket_key)


# --- Renderings ------------------------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def _modules_drawn(path_data: str) -> set[tuple[int, int]]:
    """The dark modules (row, column) of segno's SVG path: horizontal strokes one module
    high, centred half a module below the row's top edge."""
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for command, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path_data):
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        else:
            dark.update((int(y), column) for column in range(int(x), int(x + float(a))))
            x += float(a)
    return dark


async def test_the_qr_svg_is_svg_drawing_the_qr_code_of_the_token(
    session: AsyncSession, seated: Sale, keys: SigningKeys
) -> None:
    token = await ticket_token(session, seated.ticket_ids[0], signing_key=keys.ticket_key)
    svg = render_qr_svg(token)
    root = ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted input
    assert root.tag == f"{SVG}svg"
    paths = root.findall(f"{SVG}path")
    assert len(paths) == 1

    expected = segno.make(token, error=QR_ERROR_LEVEL, micro=False, mask=QR_MASK)
    # Small enough to scan from a phone screen at a gate (a Micro QR's version is a string).
    assert isinstance(expected.version, int)
    assert expected.version <= 11
    wanted = {
        (row_index, column)
        for row_index, row in enumerate(expected.matrix_iter(border=QR_BORDER))
        for column, module in enumerate(row)
        if module
    }
    assert _modules_drawn(paths[0].attrib["d"]) == wanted
    width, _ = expected.symbol_size(scale=4, border=QR_BORDER)
    assert root.attrib["width"] == str(width)


def _pdf_content(pdf: bytes) -> bytes:
    """Every stream of the PDF, inflated where compressed: enough to find the text drawn."""
    parts = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, flags=re.DOTALL):
        try:
            parts.append(zlib.decompress(stream))
        except zlib.error:
            parts.append(stream)
    return b"\n".join(parts)


def _pdf_string(text: str) -> bytes:
    """``text`` as a PDF literal string drawn with a built-in font."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({escaped})".encode("cp1252")


async def test_the_pdf_is_one_page_with_the_ticket_and_its_code(
    session: AsyncSession, event: SmallEvent, seated: Sale, keys: SigningKeys
) -> None:
    view = await ticket_view(session, seated.ticket_ids[0], seated.fan_id, signing_key=keys.ticket_key)
    pdf = render_ticket_pdf(view)
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert re.findall(rb"/Count (\d+)", pdf) == [b"1"]

    content = _pdf_content(pdf)
    local = view.local_starts_at
    for text in (
        "Test Night",
        "The Testers",
        "Test Hall, Testville",
        f"{local:%A %d %B %Y, %H:%M} {local:%Z} (Europe/London)",
        "Stalls, Row A, Seat 1",
        f"Order  {seated.order_id}",
        f"Ticket {seated.ticket_ids[0]}",
    ):
        assert _pdf_string(text) in content, text
    # The QR code is drawn as filled rectangles: one per run of dark modules.
    assert content.count(b" re f") >= 100
    # Same ticket, same bytes: a re-download is the same document.
    assert render_ticket_pdf(view) == pdf


async def test_a_title_outside_the_pdf_fonts_still_renders(
    session: AsyncSession, seated: Sale, keys: SigningKeys
) -> None:
    view = await ticket_view(session, seated.ticket_ids[0], seated.fan_id, signing_key=keys.ticket_key)
    # Windows-1252 has the dash and the accents of "Björk" and "Kraków", not the "ř" of
    # "Dvořák" (drawn without its caron) nor any Japanese (drawn as "?").
    odd = replace(view, event_title="Bj\u00f6rk \u2013 Dvo\u0159\u00e1k in Krak\u00f3w \u6771\u4eac")
    content = _pdf_content(render_ticket_pdf(odd))
    assert _pdf_string("Bj\u00f6rk \u2013 Dvor\u00e1k in Krak\u00f3w ??") in content
