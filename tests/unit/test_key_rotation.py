"""Previous ticket keys: read from the setting and the data folder, each trusted within its
window; the published set (current key first) and the JWKS entries written and read back."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from booking.errors import TicketKeyUnknown
from booking.keys import PREVIOUS_KEYS_DIR, SigningKeyError, load_signing_keys, parse_public_keys
from booking.settings import Settings
from booking.tickets.signing import (
    KeySetInvalid,
    VerifyingKey,
    jwk,
    key_id,
    keys_from_jwks,
    sign_ticket,
    trusted_keys,
    verify,
)

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
CLAIMS: dict[str, Any] = {
    "ticket_id": uuid.UUID(int=1),
    "order_id": uuid.UUID(int=2),
    "event_id": uuid.UUID(int=3),
    "seat": "Standing",
    "issued_at": NOW,
}


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def kid(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key())


def test_explanatory_text_bounds_each_key_and_is_otherwise_a_comment() -> None:
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    text = (
        "Retired on 2026-12-01, after the winter season.\n"
        "Not-After: 2027-06-30T23:59:59Z\n"
        f"{public_pem(first)}"
        "not-before: 2026-01-01T00:00:00+01:00\n"
        f"{public_pem(second)}"
    )
    parsed = parse_public_keys(text, "test")
    assert [key.kid for key in parsed] == [kid(first), kid(second)]
    assert parsed[0].not_before is None
    assert parsed[0].not_after == dt.datetime(2027, 6, 30, 23, 59, 59, tzinfo=dt.UTC)
    # A window line belongs to the key below it only.
    assert parsed[1].not_before == dt.datetime(2025, 12, 31, 23, 0, tzinfo=dt.UTC)
    assert parsed[1].not_after is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("no key here", "holds no PEM public key"),
        ("{private}", "holds a private key"),
        ("Not-After: next summer\n{public}", "is not an ISO 8601 time"),
        ("Not-After: 2027-01-01T00:00:00\n{public}", "has no timezone"),
        ("Not-Before: 2027-01-02T00:00:00Z\nNot-After: 2027-01-01T00:00:00Z\n{public}", "before Not-Before"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "is not a PEM public key"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "expected PUBLIC KEY"),
    ],
)
def test_unusable_previous_keys_are_refused_naming_where(text: str, says: str) -> None:
    key = Ed25519PrivateKey.generate()
    text = text.replace("{private}", private_pem(key)).replace("{public}", public_pem(key))
    with pytest.raises(SigningKeyError, match=says) as refused:
        parse_public_keys(text, "keys/previous/old.pem")
    assert "keys/previous/old.pem" in str(refused.value)


def test_previous_keys_come_from_the_setting_and_the_data_folder(tmp_path: Path) -> None:
    current, configured, stored, retired = (Ed25519PrivateKey.generate() for _ in range(4))
    folder = tmp_path / "keys" / PREVIOUS_KEYS_DIR
    folder.mkdir(parents=True)
    (folder / "2026-a.pem").write_text(public_pem(stored))
    (folder / "2026-b.pem").write_text(f"Not-After: {NOW - dt.timedelta(days=1)}\n{public_pem(retired)}")
    # The current key left among the previous ones (after rolling a rotation back) is listed once.
    (folder / "current.pem").write_text(public_pem(current))
    (folder / "notes.txt").write_text("not a key: only *.pem files are read")
    settings = Settings(
        data_dir=tmp_path,
        ticket_signing_key=private_pem(current),
        ticket_previous_keys=public_pem(configured),
    )
    keys = load_signing_keys(settings)
    assert [key.kid for key in keys.previous_ticket_keys] == [kid(configured), kid(stored), kid(retired)]
    published = keys.published_keys(NOW)
    assert [key.kid for key in published] == [kid(current), kid(configured), kid(stored)]
    assert published[0] == VerifyingKey(current.public_key())
    assert [key_id(key) for key in keys.verifying_keys(NOW)] == [key.kid for key in published]
    # Before the retired key's end it was published too.
    assert kid(retired) in {key.kid for key in keys.published_keys(NOW - dt.timedelta(days=2))}

    code = sign_ticket(stored, **CLAIMS)
    assert verify(code, keys.verifying_keys(NOW)).kid == kid(stored)
    with pytest.raises(TicketKeyUnknown):
        verify(sign_ticket(retired, **CLAIMS), keys.verifying_keys(NOW))


def test_a_broken_previous_key_file_stops_the_start(tmp_path: Path) -> None:
    folder = tmp_path / "keys" / PREVIOUS_KEYS_DIR
    folder.mkdir(parents=True)
    (folder / "old.pem").write_text(private_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(SigningKeyError, match=r"old\.pem holds a private key"):
        load_signing_keys(Settings(data_dir=tmp_path))
    with pytest.raises(SigningKeyError, match="BOXOFFICE_TICKET_PREVIOUS_KEYS"):
        load_signing_keys(Settings(data_dir=tmp_path / "other", ticket_previous_keys="garbage"))


def test_a_window_includes_both_ends() -> None:
    key = VerifyingKey(Ed25519PrivateKey.generate().public_key(), not_before=NOW, not_after=NOW)
    assert key.trusted_at(NOW)
    assert not key.trusted_at(NOW - dt.timedelta(microseconds=1))
    assert not key.trusted_at(NOW + dt.timedelta(microseconds=1))
    assert trusted_keys([key], NOW) == [key.public_key]
    assert trusted_keys([key], NOW + dt.timedelta(seconds=1)) == []


def test_a_key_set_is_read_back_as_written() -> None:
    keys = [
        VerifyingKey(Ed25519PrivateKey.generate().public_key()),
        VerifyingKey(
            Ed25519PrivateKey.generate().public_key(),
            not_before=NOW - dt.timedelta(days=30),
            not_after=NOW + dt.timedelta(days=30),
        ),
    ]
    document = {"keys": [jwk(key) for key in keys]}
    assert document["keys"][1]["not_after"] == "2027-01-02T12:00:00+00:00"
    # Keys of other kinds in the same set are passed over.
    document["keys"].insert(0, {"kty": "RSA", "kid": "rsa-1", "n": "AQAB", "e": "AQAB"})
    assert keys_from_jwks(document) == keys


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"x": "AAAA"}, "not a base64url Ed25519 public key"),
        ({"x": None}, "not a base64url Ed25519 public key"),
        ({"kid": "AAAAAAAA"}, "is not its key's id"),
        ({"not_after": "soon"}, "not an ISO 8601 time"),
        ({"not_after": "2027-01-01T00:00:00"}, "has no timezone"),
        ({"not_before": 5}, "must be an ISO 8601 time or null"),
        ({"not_before": "2027-01-02T00:00:00Z", "not_after": "2027-01-01T00:00:00Z"}, "before not_before"),
    ],
)
def test_a_broken_key_set_entry_is_refused(change: dict[str, Any], says: str) -> None:
    entry = {**jwk(VerifyingKey(Ed25519PrivateKey.generate().public_key())), **change}
    with pytest.raises(KeySetInvalid, match=says):
        keys_from_jwks({"keys": [entry]})


@pytest.mark.parametrize(
    "document", [[], {"keys": "none"}, {"keys": []}, {"keys": [{"kty": "RSA"}]}, {"keys": [1]}]
)
def test_what_is_not_a_key_set_is_refused(document: Any) -> None:
    with pytest.raises(KeySetInvalid):
        keys_from_jwks(document)
