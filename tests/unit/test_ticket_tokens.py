"""The ticket token format on its own: no database, only keys and strings."""

from __future__ import annotations

import base64
import datetime as dt
import string
import uuid
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from booking.errors import (
    TicketKeyUnknown,
    TicketSignatureInvalid,
    TicketTokenInvalid,
    TicketTokenMalformed,
)
from booking.tickets.signing import MAX_TOKEN_CHARS, key_id, sign_ticket, verify

KEY = Ed25519PrivateKey.generate()
ISSUED = dt.datetime(2026, 3, 14, 19, 30, 15, 987654, tzinfo=dt.UTC)
CLAIMS: dict[str, Any] = {
    "ticket_id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
    "order_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
    "event_id": uuid.UUID("00000000-0000-4000-8000-000000000003"),
    "seat": "Upper Circle, Row AA, Seat 112",
    "issued_at": ISSUED,
}
ALPHABET = string.ascii_letters + string.digits + "-_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_claims_round_trip_to_the_second_and_signing_is_deterministic() -> None:
    token = sign_ticket(KEY, **CLAIMS)
    assert token == sign_ticket(KEY, **CLAIMS)
    claims = verify(token, KEY.public_key())
    assert claims.ticket_id == CLAIMS["ticket_id"]
    assert claims.order_id == CLAIMS["order_id"]
    assert claims.event_id == CLAIMS["event_id"]
    assert claims.seat == CLAIMS["seat"]
    assert claims.issued_at == ISSUED.replace(microsecond=0)
    assert claims.issued_at.tzinfo is dt.UTC
    assert claims.kid == key_id(KEY.public_key()) == token.split(".")[0]
    assert set(token) <= set(ALPHABET + ".")


def test_any_timezone_gives_the_same_instant() -> None:
    local = ISSUED.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert sign_ticket(KEY, **{**CLAIMS, "issued_at": local}) == sign_ticket(KEY, **CLAIMS)


def test_a_naive_issue_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_ticket(KEY, **{**CLAIMS, "issued_at": ISSUED.replace(tzinfo=None)})


def test_a_seat_in_any_script_survives() -> None:
    seat = "Parkett links, Reihe 3, Platz 12 \u2013 \u6771\u30b9\u30bf\u30f3\u30c9"
    token = sign_ticket(KEY, **{**CLAIMS, "seat": seat})
    assert verify(token, KEY.public_key()).seat == seat


def test_every_single_character_change_is_refused() -> None:
    """Each position, changed to another character of the alphabet, never verifies: not even
    where only the spare low bits of a last base64 character change, because only the
    canonical encoding is accepted."""
    token = sign_ticket(KEY, **CLAIMS)
    for index, char in enumerate(token):
        if char == ".":
            continue
        for replacement in (ALPHABET[(ALPHABET.index(char) + 1) % 64], ALPHABET[ALPHABET.index(char) ^ 1]):
            changed = token[:index] + replacement + token[index + 1 :]
            with pytest.raises(TicketTokenInvalid):
                verify(changed, KEY.public_key())


def test_spare_bits_are_malformed_not_a_second_valid_spelling() -> None:
    token = sign_ticket(KEY, **CLAIMS)
    kid, payload, signature = token.split(".")
    last = payload[-1]
    spare_bits = (8 * len(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))) % 6
    assert spare_bits, "the payload length leaves no spare bits; pick another seat label"
    # Flip the lowest bit of the last character: a bit no byte uses.
    twin = payload[:-1] + ALPHABET[ALPHABET.index(last) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=" * (-len(twin) % 4)) == base64.urlsafe_b64decode(
        payload + "=" * (-len(payload) % 4)
    )
    with pytest.raises(TicketTokenMalformed):
        verify(f"{kid}.{twin}.{signature}", KEY.public_key())


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a b.c.d",
        "kid.payload.sig+/",
        "k\u00efd.payload.signature",
        "x" * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_garbage_is_malformed(token: str) -> None:
    with pytest.raises(TicketTokenMalformed):
        verify(token, KEY.public_key())


def test_a_too_long_token_is_refused_before_any_decoding() -> None:
    token = sign_ticket(KEY, **CLAIMS)
    kid, payload, signature = token.split(".")
    padded = f"{kid}.{payload}{'A' * MAX_TOKEN_CHARS}.{signature}"
    with pytest.raises(TicketTokenMalformed, match="not a ticket code"):
        verify(padded, KEY.public_key())


def test_several_trusted_keys_are_told_apart_by_key_id() -> None:
    other = Ed25519PrivateKey.generate()
    assert key_id(other.public_key()) != key_id(KEY.public_key())
    assert len(key_id(KEY.public_key())) == 8
    token = sign_ticket(other, **CLAIMS)
    # Any iterable of keys, a generator included.
    assert verify(token, (key.public_key() for key in (KEY, other))).kid == key_id(other.public_key())
    with pytest.raises(TicketKeyUnknown):
        verify(token, [KEY.public_key()])
    with pytest.raises(TicketKeyUnknown):
        verify(token, [])


def test_a_signature_from_another_key_under_our_id_is_invalid() -> None:
    forged = sign_ticket(Ed25519PrivateKey.generate(), **CLAIMS)
    _, payload, signature = forged.split(".")
    with pytest.raises(TicketSignatureInvalid):
        verify(f"{key_id(KEY.public_key())}.{payload}.{signature}", KEY.public_key())


def test_a_genuine_signature_over_an_unknown_format_is_malformed() -> None:
    kid = key_id(KEY.public_key())
    for fields in ([2, *msgspec.msgpack.decode(_payload_bytes())[1:]], ["not", "a", "ticket"]):
        payload = _b64(msgspec.msgpack.encode(fields))
        signature = _b64(KEY.sign(f"{kid}.{payload}".encode()))
        with pytest.raises(TicketTokenMalformed, match="format"):
            verify(f"{kid}.{payload}.{signature}", KEY.public_key())


def _payload_bytes() -> bytes:
    payload = sign_ticket(KEY, **CLAIMS).split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
