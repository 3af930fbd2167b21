"""`boxoffice tickets verify`: a code checked offline against a key set from a file (JSON Web
Key Set or PEM) or from a live API on loopback, genuine, altered, of an unknown key, of a
previous key during a rotation, and of a retired one; the exit codes and `--json`; and a
start that loads neither the database layer nor the web framework."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result as CliResult
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from booking.settings import Settings, get_settings
from booking.tickets.signing import VerifyingKey, jwk, key_id, sign_ticket
from console.cli import app
from console.stack import StackInfo
from tests.conftest import free_port
from tests.live_api import LiveApi

runner = CliRunner()
ISSUED = dt.datetime(2026, 12, 3, 18, 30, tzinfo=dt.UTC)
CLAIMS: dict[str, Any] = {
    "ticket_id": uuid.UUID("a3f1c2d4-5b6e-4f70-8a91-b2c3d4e5f607"),
    "order_id": uuid.UUID("0b9e4c1a-7d2f-4e3b-9c5a-6f8d1e2a3b4c"),
    "event_id": uuid.UUID("e7d6c5b4-a392-4817-b6f5-e4d3c2b1a098"),
    "seat": "Stalls, Row C, Seat [12]",
    "issued_at": ISSUED,
}


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def tampered(token: str) -> str:
    """The code with one claim byte changed: still well formed, no longer signed."""
    kid, payload, signature = token.split(".")
    index = len(payload) // 2
    swapped = "B" if payload[index] != "B" else "C"
    return f"{kid}.{payload[:index]}{swapped}{payload[index + 1 :]}.{signature}"


def verify(*args: str) -> CliResult:
    return runner.invoke(app, ["tickets", "verify", *args])


def refusal(result: CliResult) -> dict[str, Any]:
    assert result.exit_code == 1, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["valid"] is False
    return document


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data = tmp_path / "cli-data"
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(data))
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def key_set(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "ticket-keys.json"
    path.write_text(json.dumps({"keys": [jwk(VerifyingKey(key.public_key()))]}))
    return path


def test_a_genuine_code_prints_its_claims(key: Ed25519PrivateKey, key_set: Path) -> None:
    token = sign_ticket(key, **CLAIMS)
    result = verify(token, "--keys", str(key_set))
    assert result.exit_code == 0, result.output
    assert "valid ticket code" in result.stdout
    for shown in (
        str(CLAIMS["ticket_id"]),
        str(CLAIMS["order_id"]),
        str(CLAIMS["event_id"]),
        "Stalls, Row C, Seat [12]",  # printed as text, not read as markup
        "2026-12-03T18:30:00+00:00",
        key_id(key.public_key()),
    ):
        assert shown in result.stdout

    as_json = verify(token, "--keys", str(key_set), "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {
        "valid": True,
        "ticket_id": str(CLAIMS["ticket_id"]),
        "order_id": str(CLAIMS["order_id"]),
        "event_id": str(CLAIMS["event_id"]),
        "seat": CLAIMS["seat"],
        "issued_at": "2026-12-03T18:30:00+00:00",
        "kid": key_id(key.public_key()),
    }


def test_a_pem_file_serves_as_well(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    pem = tmp_path / "ticket-key.pem"
    pem.write_text(public_pem(key))
    assert verify(sign_ticket(key, **CLAIMS), "--keys", str(pem)).exit_code == 0


def test_each_reason_a_code_is_not_valid_is_said(
    tmp_path: Path, key: Ed25519PrivateKey, key_set: Path
) -> None:
    token = sign_ticket(key, **CLAIMS)
    unknown = sign_ticket(Ed25519PrivateKey.generate(), **CLAIMS)

    result = verify(tampered(token), "--keys", str(key_set))
    assert result.exit_code == 1
    assert "bad signature" in result.stderr
    assert result.stdout == ""
    assert refusal(verify(tampered(token), "--keys", str(key_set), "--json"))["reason"] == "bad_signature"

    result = verify(unknown, "--keys", str(key_set))
    assert result.exit_code == 1
    assert f"signed by key {unknown.split('.')[0]}, which is not in the key set" in result.stderr
    assert refusal(verify(unknown, "--keys", str(key_set), "--json")) == {
        "valid": False,
        "reason": "unknown_key",
        "detail": f"signed by key {unknown.split('.')[0]}, which is not in the key set",
        "kid": unknown.split(".")[0],
    }

    for garbage in ("hello", token.replace(".", "", 1), token + "x" * 2000, token[:-10]):
        assert refusal(verify(garbage, "--keys", str(key_set), "--json"))["reason"] == "malformed"


def test_a_key_outside_its_window_is_told_apart(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    token = sign_ticket(key, **CLAIMS)
    now = dt.datetime.now(dt.UTC)
    for window, reason in (
        ({"not_after": now - dt.timedelta(hours=1)}, "key_expired"),
        ({"not_before": now + dt.timedelta(hours=1)}, "key_not_yet_valid"),
    ):
        path = tmp_path / f"{reason}.json"
        path.write_text(json.dumps({"keys": [jwk(VerifyingKey(key.public_key(), **window))]}))
        assert refusal(verify(token, "--keys", str(path), "--json"))["reason"] == reason
    path = tmp_path / "open.json"
    path.write_text(
        json.dumps({"keys": [jwk(VerifyingKey(key.public_key(), not_after=now + dt.timedelta(days=1)))]})
    )
    assert verify(token, "--keys", str(path)).exit_code == 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read the ticket keys"),
        ("{not json", "is not JSON"),
        ('{"keys": []}', "no Ed25519 signing key"),
        ("just text", "neither a JSON Web Key Set nor PEM"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "holds a private key"),
    ],
)
def test_keys_that_cannot_be_read_are_said_so(
    tmp_path: Path, key: Ed25519PrivateKey, content: str | None, says: str
) -> None:
    path = tmp_path / "keys.txt"
    if content is not None:
        path.write_text(content)
    token = sign_ticket(key, **CLAIMS)
    result = verify(token, "--keys", str(path))
    assert result.exit_code == 1
    assert says in result.stderr
    document = refusal(verify(token, "--keys", str(path), "--json"))
    assert document["reason"] == "keys_unavailable"
    assert says in document["detail"]


def test_an_unreachable_api_is_said_so(key: Ed25519PrivateKey) -> None:
    url = f"http://127.0.0.1:{free_port()}/ticket-keys"
    document = refusal(verify(sign_ticket(key, **CLAIMS), "--keys", url, "--json"))
    assert document["reason"] == "keys_unavailable"
    assert f"cannot fetch the ticket keys from {url}" in document["detail"]


@pytest.fixture
def previous() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def rotated_api(settings: Settings, previous: Ed25519PrivateKey) -> Iterator[LiveApi]:
    """A live API whose key set holds a previous key beside its current one."""
    live = LiveApi(settings.model_copy(update={"ticket_previous_keys": public_pem(previous)}))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def test_against_a_live_api_during_a_rotation(
    rotated_api: LiveApi, previous: Ed25519PrivateKey, env: Path
) -> None:
    assert rotated_api.app is not None
    current = rotated_api.app.state.signing_keys.ticket_key
    url = f"{rotated_api.url}/ticket-keys"
    fresh, old = sign_ticket(current, **CLAIMS), sign_ticket(previous, **CLAIMS)

    for token, kid in ((fresh, key_id(current.public_key())), (old, key_id(previous.public_key()))):
        result = verify(token, "--keys", url, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["kid"] == kid
    assert refusal(verify(tampered(old), "--keys", url, "--json"))["reason"] == "bad_signature"
    never = sign_ticket(Ed25519PrivateKey.generate(), **CLAIMS)
    assert refusal(verify(never, "--keys", url, "--json"))["reason"] == "unknown_key"
    # The well-known address holds the same set; /ticket-key only the current key.
    assert verify(old, "--keys", f"{rotated_api.url}/.well-known/jwks.json").exit_code == 0
    assert verify(fresh, "--keys", f"{rotated_api.url}/ticket-key").exit_code == 0
    assert (
        refusal(verify(old, "--keys", f"{rotated_api.url}/ticket-key", "--json"))["reason"] == "unknown_key"
    )

    # Without --keys: the running local stack's API, as its status file names it.
    env.mkdir(parents=True, exist_ok=True)
    StackInfo(database_url="", redis_url="", api_url=rotated_api.url, pid=os.getpid()).write(env)
    result = verify(old)
    assert result.exit_code == 0, result.output
    assert key_id(previous.public_key()) in result.stdout
    assert refusal(verify(never, "--json"))["reason"] == "unknown_key"


def test_the_command_loads_no_database_layer_or_web_framework(tmp_path: Path, key_set: Path) -> None:
    token = sign_ticket(Ed25519PrivateKey.generate(), **CLAIMS)
    key_set.write_text(json.dumps({"keys": [jwk(VerifyingKey(Ed25519PrivateKey.generate().public_key()))]}))
    probe = (
        "import sys\n"
        "import typer\n"
        "from console.cli_tickets import tickets_app\n"
        "root = typer.Typer()\n"
        "root.add_typer(tickets_app, name='tickets')\n"
        f"root(['tickets', 'verify', {token!r}, '--keys', {str(key_set)!r}, '--json'], standalone_mode=False)\n"
        "loaded = sorted(m for m in ('sqlalchemy', 'litestar', 'psycopg', 'redis', 'textual', 'rq') if m in sys.modules)\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "BOXOFFICE_DATA_DIR": str(tmp_path / "probe")},
    )
    assert "LOADED []" in ran.stderr, ran.stderr
    assert json.loads(ran.stdout)["reason"] == "unknown_key"


def test_a_code_whose_key_id_starts_with_a_dash_is_a_code_not_an_option(tmp_path: Path) -> None:
    # A key id is base64url, so one key in 64 gives codes that begin with "-".
    key = next(k for k in iter(Ed25519PrivateKey.generate, None) if key_id(k.public_key()).startswith("-"))
    pem = tmp_path / "ticket-key.pem"
    pem.write_text(public_pem(key))
    token = sign_ticket(key, **CLAIMS)
    assert verify(token, "--keys", str(pem)).exit_code == 0
    assert verify("--keys", str(pem), "--", token).exit_code == 0
    assert verify("-not-a-code", "--keys", str(pem)).exit_code == 1
