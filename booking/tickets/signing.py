"""Signed ticket tokens: what the QR code carries and what a gate checks, offline if need be.

A token is three base64url segments (no padding) joined by dots::

    <kid>.<payload>.<signature>

``kid`` names the Ed25519 key (the first 6 bytes of the SHA-256 of its raw public key), so a
gate trusting several keys during a rotation picks the right one without trying each.
``payload`` is a MessagePack array (version, ticket id, order id, event id, seat, issued-at)
with the three UUIDs as 16 raw bytes. ``signature`` is Ed25519 over the ASCII bytes of
``<kid>.<payload>``, so the key id is authenticated too. docs/tickets.md takes a real token
apart byte by byte.

The keys that verify tokens are published as a JSON Web Key Set (RFC 7517, with the OKP key
type of RFC 8037): ``jwk`` writes one entry and ``keys_from_jwks`` reads a set back, so a gate
or a script can verify codes with no other knowledge of the system.

Why not a JWT (PyJWT, EdDSA): its JSON header and JSON claims with UUIDs as text make a
seated ticket's code 377 characters instead of 207, which takes the QR code from version 10
to version 15, denser and harder to scan from a scuffed print or a cracked phone screen. The
format here is small enough to read in full, and the verifier checks the signature before it
parses a single claim.

Invariants: ``sign_ticket`` is deterministic (Ed25519 signs deterministically and issued-at is
the ticket's stored issue time), so a ticket always renders to the same code; every string
``verify`` accepts is the one canonical encoding of its bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from booking.errors import TicketKeyUnknown, TicketSignatureInvalid, TicketTokenMalformed

TOKEN_VERSION = 1
SIGNATURE_BYTES = 64
# Far above any real token (about 200 characters); bounds the work an attacker can ask for.
MAX_TOKEN_CHARS = 1024
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class _Payload(msgspec.Struct, array_like=True, frozen=True):
    version: int
    ticket_id: uuid.UUID
    order_id: uuid.UUID
    event_id: uuid.UUID
    seat: str
    issued_at: int  # Unix seconds


_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_decoder = msgspec.msgpack.Decoder(_Payload)


@dataclass(frozen=True)
class TicketClaims:
    """What a verified token proves. ``seat`` is the gate-readable place: section, row and
    seat for a reserved seat, the price tier's name for general admission. ``issued_at`` is
    UTC, whole seconds."""

    ticket_id: uuid.UUID
    order_id: uuid.UUID
    event_id: uuid.UUID
    seat: str
    issued_at: dt.datetime
    kid: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    """Decode one segment, accepting only the canonical form.

    Raises:
        TicketTokenMalformed: not base64url, or not the canonical encoding of its bytes
            (the spare low bits of the last character set, for instance).
    """
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TicketTokenMalformed("The ticket code is damaged.") from None
    # Without this, several strings would decode to the same bytes and so carry the same
    # signature; one ticket, one code keeps gate logs and duplicate scans unambiguous.
    if _b64encode(data) != segment:
        raise TicketTokenMalformed("The ticket code is damaged.")
    return data


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's id as written in tokens: the first 6 bytes of the SHA-256 of the raw 32-byte
    public key, in base64url (8 characters); stable for the key."""
    return _b64encode(hashlib.sha256(raw_public_key(public_key)).digest()[:6])


def sign_ticket(
    private_key: Ed25519PrivateKey,
    *,
    ticket_id: uuid.UUID,
    order_id: uuid.UUID,
    event_id: uuid.UUID,
    seat: str,
    issued_at: dt.datetime,
) -> str:
    """The token for these claims, signed with ``private_key``.

    ``issued_at`` must be timezone-aware; it is kept to the second.

    Raises:
        ValueError: ``issued_at`` is naive (its instant would be a guess).
    """
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    payload = _Payload(
        version=TOKEN_VERSION,
        ticket_id=ticket_id,
        order_id=order_id,
        event_id=event_id,
        seat=seat,
        issued_at=int(issued_at.timestamp()),
    )
    signing_input = f"{key_id(private_key.public_key())}.{_b64encode(_encoder.encode(payload))}"
    signature = private_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64encode(signature)}"


def verify(token: str, public_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey]) -> TicketClaims:
    """The claims of ``token`` if one of ``public_keys`` signed it. Needs no database or
    network, so a gate can admit fans while offline; revocation is not seen here (see
    ``booking.tickets.service.check_ticket``).

    Pass several keys while a signing key is being rotated: the token's key id picks one.

    Raises:
        TicketTokenMalformed: not a ticket token at all (garbage, truncated, damaged).
        TicketKeyUnknown: signed by a key not among ``public_keys`` (rotated out, or never
            ours).
        TicketSignatureInvalid: the signature does not match: forged, or altered after
            signing.
    """
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN_SHAPE.fullmatch(token):
        raise TicketTokenMalformed("This is not a ticket code.")
    kid, payload_segment, signature_segment = token.split(".")
    payload_bytes = _b64decode(payload_segment)
    signature = _b64decode(signature_segment)
    if len(signature) != SIGNATURE_BYTES:
        raise TicketTokenMalformed("The ticket code is incomplete.")

    keys = [public_keys] if isinstance(public_keys, Ed25519PublicKey) else list(public_keys)
    matching = [key for key in keys if key_id(key) == kid]
    if not matching:
        raise TicketKeyUnknown()
    signing_input = f"{kid}.{payload_segment}".encode("ascii")
    for key in matching:
        try:
            key.verify(signature, signing_input)
            break
        except InvalidSignature:
            continue
    else:
        raise TicketSignatureInvalid()

    # Only bytes we signed ourselves reach the parser; a failure here means a format we no
    # longer read, not an attack.
    try:
        payload = _decoder.decode(payload_bytes)
    except msgspec.DecodeError:
        raise TicketTokenMalformed("The ticket code is in a format this system does not read.") from None
    if payload.version != TOKEN_VERSION:
        raise TicketTokenMalformed("The ticket code is in a format this system does not read.")
    return TicketClaims(
        ticket_id=payload.ticket_id,
        order_id=payload.order_id,
        event_id=payload.event_id,
        seat=payload.seat,
        issued_at=dt.datetime.fromtimestamp(payload.issued_at, dt.UTC),
        kid=kid,
    )


class KeySetInvalid(ValueError):
    """A key set (JWKS) or one of its keys cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class VerifyingKey:
    """A public key that verifies ticket codes, and the window it is trusted in.

    ``not_before``/``not_after`` (timezone-aware, None for open-ended) bound when the key is
    trusted at all, whatever the tokens it signed say: a retired key is kept until the last
    event it signed tickets for is over, then it verifies nothing.
    """

    public_key: Ed25519PublicKey
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    @property
    def kid(self) -> str:
        return key_id(self.public_key)

    def trusted_at(self, at: dt.datetime) -> bool:
        """Whether the key verifies codes at instant ``at`` (both ends of its window included)."""
        return (self.not_before is None or self.not_before <= at) and (
            self.not_after is None or at <= self.not_after
        )


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The 32 bytes of the key itself, as a JWK's ``x`` carries them (base64url)."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def jwk(key: VerifyingKey) -> dict[str, Any]:
    """``key`` as one entry of the published key set: an Ed25519 JWK (``kty`` OKP, ``crv``
    Ed25519, ``x`` the raw key in base64url) with its ``kid`` and validity window (ISO 8601 in
    UTC, or null)."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": key.kid,
        "x": _b64encode(raw_public_key(key.public_key)),
        "use": "sig",
        "alg": "EdDSA",
        "not_before": _iso(key.not_before),
        "not_after": _iso(key.not_after),
    }


def _window_end(entry: dict[str, Any], name: str, where: str) -> dt.datetime | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise KeySetInvalid(f"{where}: {name} must be an ISO 8601 time or null")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise KeySetInvalid(f"{where}: {name} {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise KeySetInvalid(f"{where}: {name} {value!r} has no timezone (add Z or +00:00)")
    return parsed


def keys_from_jwks(document: Any) -> list[VerifyingKey]:
    """The Ed25519 keys of a JSON Web Key Set (the parsed JSON), in its order.

    Entries of other key types or curves, and keys for other uses than signing, are skipped:
    a set may carry keys for other purposes.

    Raises:
        KeySetInvalid: not a key set; an Ed25519 entry whose ``x`` is not a 32-byte key,
            whose ``kid`` is not the one derived from its key (``key_id``), or whose window
            is not ISO 8601 with a timezone, or ends before it starts; no Ed25519 key at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetInvalid('not a key set: expected a JSON object with a "keys" list')
    found: list[VerifyingKey] = []
    for index, entry in enumerate(document["keys"]):
        where = f"keys[{index}]"
        if not isinstance(entry, dict):
            raise KeySetInvalid(f"{where} is not a JSON object")
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519" or entry.get("use", "sig") != "sig":
            continue
        x = entry.get("x")
        try:
            public_key = Ed25519PublicKey.from_public_bytes(_b64decode(x) if isinstance(x, str) else b"")
        except (TicketTokenMalformed, ValueError):
            raise KeySetInvalid(f"{where}: x is not a base64url Ed25519 public key") from None
        key = VerifyingKey(
            public_key,
            not_before=_window_end(entry, "not_before", where),
            not_after=_window_end(entry, "not_after", where),
        )
        if entry.get("kid") != key.kid:
            raise KeySetInvalid(f"{where}: kid {entry.get('kid')!r} is not its key's id {key.kid!r}")
        if key.not_before and key.not_after and key.not_after < key.not_before:
            raise KeySetInvalid(f"{where}: not_after is before not_before")
        found.append(key)
    if not found:
        raise KeySetInvalid("the key set holds no Ed25519 signing key")
    return found


def trusted_keys(keys: Sequence[VerifyingKey], at: dt.datetime) -> list[Ed25519PublicKey]:
    """The public keys of ``keys`` trusted at ``at``: what ``verify`` is given."""
    return [key.public_key for key in keys if key.trusted_at(at)]
