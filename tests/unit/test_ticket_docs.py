"""docs/tickets.md cannot drift from the code: its worked example is re-made here with the same
key and claims, every value it shows is checked against what the code produces, and its
standalone verifier is run, exactly as printed, on codes the code signs."""

from __future__ import annotations

import ast
import base64
import datetime as dt
import hashlib
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from booking.tickets.signing import VerifyingKey, jwk, key_id, raw_public_key, sign_ticket, verify

DOC = Path(__file__).resolve().parents[2] / "docs" / "tickets.md"
# RFC 8032 section 7.1, TEST 1: a published test key, never a real one.
TEST_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
TEST_KEY = Ed25519PrivateKey.from_private_bytes(TEST_SECRET)
CLAIMS: dict[str, Any] = {
    "ticket_id": uuid.UUID("a3f1c2d4-5b6e-4f70-8a91-b2c3d4e5f607"),
    "order_id": uuid.UUID("0b9e4c1a-7d2f-4e3b-9c5a-6f8d1e2a3b4c"),
    "event_id": uuid.UUID("e7d6c5b4-a392-4817-b6f5-e4d3c2b1a098"),
    "seat": "Stalls, Row C, Seat 12",
    "issued_at": dt.datetime(2026, 12, 3, 18, 30, tzinfo=dt.UTC),
}


def example(name: str) -> str:
    """The fenced block that follows ``<!-- example: name -->`` in the doc."""
    found = re.search(
        rf"<!-- example: {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```", DOC.read_text(), re.DOTALL
    )
    assert found, f"docs/tickets.md has no example {name!r}"
    return found.group(1)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _hex(text: str) -> list[str]:
    """The hex words of an annotated dump (each line's text before two spaces of gap)."""
    return [line.split("  ")[0] for line in text.splitlines()]


@pytest.fixture(scope="module")
def token() -> str:
    return sign_ticket(TEST_KEY, **CLAIMS)


def test_the_example_code_is_what_the_code_signs(token: str) -> None:
    assert example("token") == token
    assert len(token) == 208
    claims = verify(token, TEST_KEY.public_key())
    assert (claims.ticket_id, claims.order_id, claims.event_id) == (
        CLAIMS["ticket_id"],
        CLAIMS["order_id"],
        CLAIMS["event_id"],
    )
    assert claims.seat == CLAIMS["seat"]
    assert claims.issued_at == CLAIMS["issued_at"]


def test_the_key_id_steps_are_the_derivation(token: str) -> None:
    raw = raw_public_key(TEST_KEY.public_key())
    digest = hashlib.sha256(raw).digest()
    steps = [line.split(None, 1)[1].rsplit(None, 1)[-1] for line in example("kid").splitlines()]
    assert steps == [raw.hex(), digest.hex(), digest[:6].hex(), key_id(TEST_KEY.public_key())]
    assert token.split(".")[0] == steps[-1]
    assert f"public key (32 bytes)   {raw.hex()}" in DOC.read_text()
    assert f"secret key (32 bytes)   {TEST_SECRET.hex()}" in DOC.read_text()


def test_the_payload_dump_is_the_payload_byte_for_byte(token: str) -> None:
    payload = _b64(token.split(".")[1])
    dumped = "".join(word.replace(" ", "") for word in _hex(example("payload")) if word.strip())
    assert bytes.fromhex(dumped) == payload
    assert f"decodes to {len(payload)} bytes" in DOC.read_text()
    decoded = msgpack.unpackb(payload)
    shown = re.search(r"As MessagePack reads it.*?```python\n(.*?)\n```", DOC.read_text(), re.DOTALL)
    assert shown
    assert ast.literal_eval(shown.group(1)) == decoded
    assert decoded == [
        1,
        CLAIMS["ticket_id"].bytes,
        CLAIMS["order_id"].bytes,
        CLAIMS["event_id"].bytes,
        CLAIMS["seat"],
        int(CLAIMS["issued_at"].timestamp()),
    ]


def test_the_signature_and_key_set_are_the_codes(token: str) -> None:
    kid, payload, signature = token.split(".")
    assert example("signature") == _b64(signature).hex()
    signed = f"{kid}.{payload}".encode("ascii")
    TEST_KEY.public_key().verify(_b64(signature), signed)
    assert f"the {len(signed)} ASCII bytes" in DOC.read_text()
    assert json.loads(example("jwks")) == {"keys": [jwk(VerifyingKey(TEST_KEY.public_key()))]}


def _run_snippet(tmp_path: Path, code: str, key_set: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify_ticket.py"
    script.write_text(example("verify_ticket.py") + "\n")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(key_set))
    return subprocess.run(
        [sys.executable, str(script), code, str(keys)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_snippet_prints_the_documented_claims(tmp_path: Path, token: str) -> None:
    ran = _run_snippet(tmp_path, token, json.loads(example("jwks")))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == json.loads(example("claims"))


def test_the_snippet_verifies_any_code_the_code_signs_and_refuses_the_rest(tmp_path: Path) -> None:
    """A fresh key and other claims (a seat in another script, GA), and the key set as the
    API publishes it: beside another key, and with a validity window."""
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    claims = {**CLAIMS, "ticket_id": uuid.uuid4(), "seat": "Parkett, Reihe 3, Platz 12 \u2013 \u6771"}
    code = sign_ticket(key, **claims)
    now = dt.datetime.now(dt.UTC)
    published = {
        "keys": [
            jwk(VerifyingKey(other.public_key())),
            jwk(VerifyingKey(key.public_key(), not_after=now + dt.timedelta(days=1))),
        ]
    }
    ran = _run_snippet(tmp_path, code, published)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "ticket_id": str(claims["ticket_id"]),
        "order_id": str(claims["order_id"]),
        "event_id": str(claims["event_id"]),
        "seat": claims["seat"],
        "issued_at": "2026-12-03T18:30:00+00:00",
        "kid": key_id(key.public_key()),
    }

    kid, payload, signature = code.split(".")
    altered_payload = _b64(payload).replace(b"Parkett", b"Balkon!")
    altered = f"{kid}.{base64.urlsafe_b64encode(altered_payload).rstrip(b'=').decode()}.{signature}"
    # The signature's last character carries 4 spare bits: setting one leaves the bytes as
    # they were, and is refused as not their one spelling.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = code[:-1] + alphabet[alphabet.index(code[-1]) ^ 1]
    assert _b64(spare.split(".")[2]) == _b64(signature)
    forged = sign_ticket(other, **claims).split(".")
    refusals = {
        altered: "bad signature",
        f"{kid}.{forged[1]}.{forged[2]}": "bad signature",
        spare: "malformed",
        sign_ticket(Ed25519PrivateKey.generate(), **claims): "unknown key",
        "not-a-ticket": "malformed",
    }
    for refused, why in refusals.items():
        ran = _run_snippet(tmp_path, refused, published)
        assert ran.returncode == 1, (why, ran.stdout)
        assert ran.stderr.startswith(f"not a valid ticket code: {why}"), (why, ran.stderr)

    retired = {"keys": [jwk(VerifyingKey(key.public_key(), not_after=now - dt.timedelta(seconds=1)))]}
    ran = _run_snippet(tmp_path, code, retired)
    assert ran.returncode == 1
    assert "retired" in ran.stderr
