"""Admission tokens: what a fan let through the waiting room sends with each hold and checkout.

The house format of ticket codes (``booking.tickets.signing``): three base64url segments,
``<kid>.<payload>.<signature>``, signed with the deployment's ticket signing key (Ed25519),
so no second secret has to be kept, rotated or published. The payload is a MessagePack array
(version, event id, fan id, window end in Unix milliseconds), the ids as 16 raw bytes.

The signature is over ``DOMAIN`` followed by the ASCII ``<kid>.<payload>``, where a ticket's
is over ``<kid>.<payload>`` alone. ``DOMAIN`` holds a newline, which no ticket's signed
bytes (base64url and dots) can, so the messages the key signs for one purpose are never
messages of the other: no ticket code verifies as an admission token, and no admission
token as a ticket code, whatever their payloads.

Invariants: ``sign`` is deterministic (Ed25519 is, and every claim comes from the admission's
row), so polling for the token gives the same string each time; ``verify`` checks the
signature before it parses a single claim, and accepts only the canonical encoding.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from booking.errors import AdmissionTokenInvalid
from booking.tickets.signing import key_id

TOKEN_VERSION = 1
DOMAIN = b"boxoffice admission token\n"
SIGNATURE_BYTES = 64
# About 130 characters in practice; bounds the work a caller can ask for.
MAX_TOKEN_CHARS = 512
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class _Payload(msgspec.Struct, array_like=True, frozen=True):
    version: int
    event_id: uuid.UUID
    fan_id: uuid.UUID
    expires_ms: int


_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_decoder = msgspec.msgpack.Decoder(_Payload)


@dataclass(frozen=True)
class AdmissionClaims:
    """What a verified token says: this fan may shop this event until ``expires_at``. Whether
    the admission was given up since is not in it (``booking.waiting_room.service``)."""

    event_id: uuid.UUID
    fan_id: uuid.UUID
    expires_at: dt.datetime
    kid: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    """Raises: AdmissionTokenInvalid (not base64url, or not the canonical form of its bytes)."""
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise AdmissionTokenInvalid("The admission token is damaged.") from None
    if _b64encode(data) != segment:
        raise AdmissionTokenInvalid("The admission token is damaged.")
    return data


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def to_ms(at: dt.datetime) -> int:
    """``at`` in whole Unix milliseconds (the precision of every waiting-room time), by
    integer arithmetic: a float timestamp times 1000 can land a millisecond short."""
    return (at - _EPOCH) // _MS


def from_ms(ms: int) -> dt.datetime:
    return _EPOCH + ms * _MS


def sign(
    private_key: Ed25519PrivateKey, *, event_id: uuid.UUID, fan_id: uuid.UUID, expires_at: dt.datetime
) -> str:
    """The token admitting ``fan_id`` to ``event_id`` until ``expires_at`` (timezone-aware,
    kept to the millisecond).

    Raises:
        ValueError: ``expires_at`` is naive.
    """
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    payload = _Payload(TOKEN_VERSION, event_id, fan_id, to_ms(expires_at))
    signing_input = f"{key_id(private_key.public_key())}.{_b64encode(_encoder.encode(payload))}"
    signature = private_key.sign(DOMAIN + signing_input.encode("ascii"))
    return f"{signing_input}.{_b64encode(signature)}"


def verify(token: str, public_keys: Iterable[Ed25519PublicKey]) -> AdmissionClaims:
    """The claims of ``token`` if one of ``public_keys`` signed it as an admission token.
    Expiry, fan and event are the caller's to compare (each has its own refusal).

    Raises:
        AdmissionTokenInvalid: not an admission token (garbage, damaged, a ticket code),
            signed by a key not among ``public_keys``, or altered after signing.
    """
    if len(token) > MAX_TOKEN_CHARS or not _SHAPE.fullmatch(token):
        raise AdmissionTokenInvalid("This is not an admission token.")
    kid, payload_segment, signature_segment = token.split(".")
    payload_bytes = _b64decode(payload_segment)
    signature = _b64decode(signature_segment)
    if len(signature) != SIGNATURE_BYTES:
        raise AdmissionTokenInvalid("The admission token is incomplete.")
    signed = DOMAIN + f"{kid}.{payload_segment}".encode("ascii")
    for key in public_keys:
        if key_id(key) != kid:
            continue
        try:
            key.verify(signature, signed)
            break
        except InvalidSignature:
            continue
    else:
        # One answer for an unknown key and a bad signature: a forger learns nothing.
        raise AdmissionTokenInvalid("The admission token is forged, altered, or not from this system.")
    try:
        payload = _decoder.decode(payload_bytes)
    except msgspec.DecodeError:
        raise AdmissionTokenInvalid("The admission token is in a format this system does not read.") from None
    if payload.version != TOKEN_VERSION:
        raise AdmissionTokenInvalid("The admission token is in a format this system does not read.")
    return AdmissionClaims(payload.event_id, payload.fan_id, from_ms(payload.expires_ms), kid)
