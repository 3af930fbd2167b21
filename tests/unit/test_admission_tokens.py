"""Admission tokens: signed like ticket codes with the same key, in a domain of their own, so
neither kind ever passes for the other."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from booking.errors import AdmissionTokenInvalid, TicketTokenInvalid
from booking.tickets import signing
from booking.waiting_room import tokens

KEY = Ed25519PrivateKey.generate()
EVENT, FAN = uuid.uuid4(), uuid.uuid4()
ENDS = dt.datetime(2026, 12, 5, 19, 10, 0, 123000, tzinfo=dt.UTC)


def _token(key: Ed25519PrivateKey = KEY) -> str:
    return tokens.sign(key, event_id=EVENT, fan_id=FAN, expires_at=ENDS)


def test_a_token_verifies_to_its_claims_and_is_the_same_every_time() -> None:
    token = _token()
    assert token == _token()
    claims = tokens.verify(token, [KEY.public_key()])
    assert (claims.event_id, claims.fan_id, claims.expires_at) == (EVENT, FAN, ENDS)
    assert claims.kid == signing.key_id(KEY.public_key())
    assert len(token) < 160


def test_milliseconds_round_trip_exactly() -> None:
    for ms in (0, 1, 1_764_939_600_123, 1_764_939_600_999, 2**41 + 7):
        assert tokens.to_ms(tokens.from_ms(ms)) == ms


def test_a_ticket_code_is_not_an_admission_token_and_an_admission_token_is_not_a_ticket() -> None:
    ticket = signing.sign_ticket(
        KEY,
        ticket_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        event_id=EVENT,
        seat="Stalls, Row A, Seat 1",
        issued_at=ENDS,
    )
    # Both are genuine, signed by the one key, and each verifies as what it is.
    signing.verify(ticket, KEY.public_key())
    tokens.verify(_token(), [KEY.public_key()])
    with pytest.raises(AdmissionTokenInvalid):
        tokens.verify(ticket, [KEY.public_key()])
    with pytest.raises(TicketTokenInvalid):
        signing.verify(_token(), KEY.public_key())


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t[:-3],  # cut short
        lambda t: t + "A",  # not canonical base64url any more
        lambda t: t.replace(".", "", 1),
        lambda t: "x" * 600,
        lambda t: "",
        lambda t: "a.b.c",
        lambda t: t.split(".")[0] + "." + t.split(".")[1][:-2] + "AA." + t.split(".")[2],  # altered claims
    ],
)
def test_a_damaged_or_altered_token_is_refused(damage: object) -> None:
    with pytest.raises(AdmissionTokenInvalid):
        tokens.verify(damage(_token()), [KEY.public_key()])  # type: ignore[operator]


def test_a_token_of_another_key_is_refused_and_a_previous_key_still_verifies() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(AdmissionTokenInvalid):
        tokens.verify(_token(other), [KEY.public_key()])
    # During a key rotation the earlier key is still trusted.
    assert tokens.verify(_token(other), [KEY.public_key(), other.public_key()]).fan_id == FAN


def test_a_naive_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        tokens.sign(KEY, event_id=EVENT, fan_id=FAN, expires_at=ENDS.replace(tzinfo=None))
