from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from booking.keys import SigningKeyError, load_signing_keys
from booking.settings import Settings


def test_keys_are_generated_once_owner_only_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_signing_keys(settings)
    key_file = tmp_path / "keys" / "ticket_signing_key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys" / "token_secret").stat().st_mode) == 0o600
    second = load_signing_keys(settings)
    assert second.ticket_public_pem() == first.ticket_public_pem()
    assert second.token_secret == first.token_secret
    # A signature made before a restart verifies after it.
    signature = first.ticket_key.sign(b"ticket")
    second.ticket_public_key.verify(signature, b"ticket")
    with pytest.raises(InvalidSignature):
        second.ticket_public_key.verify(signature, b"forged")


def test_configured_keys_win_and_nothing_is_written(tmp_path: Path) -> None:
    generated = load_signing_keys(Settings(data_dir=tmp_path / "a"))
    pem = generated.ticket_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = Settings(data_dir=tmp_path / "b", ticket_signing_key=pem, token_secret="s" * 40)
    keys = load_signing_keys(settings)
    assert keys.ticket_public_pem() == generated.ticket_public_pem()
    assert keys.token_secret == b"s" * 40
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("bad", ["not a key", "ec"])
def test_a_malformed_configured_key_is_refused(tmp_path: Path, bad: str) -> None:
    if bad == "ec":
        bad = (
            generate_private_key(SECP256R1())
            .private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            .decode()
        )
    with pytest.raises(SigningKeyError, match="BOXOFFICE_TICKET_SIGNING_KEY"):
        load_signing_keys(Settings(data_dir=tmp_path, ticket_signing_key=bad))


def test_a_short_token_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="32 bytes"):
        load_signing_keys(Settings(data_dir=tmp_path, token_secret="short"))


def test_processes_starting_at_once_all_get_the_one_key_written(tmp_path: Path) -> None:
    """The API's workers start together on a fresh data folder: each must end up with the
    same, complete key, never a half-written file read as a malformed key."""

    def start(settings: Settings, barrier: threading.Barrier) -> tuple[str, bytes]:
        barrier.wait()
        keys = load_signing_keys(settings)
        return keys.ticket_public_pem(), keys.token_secret

    for attempt in range(20):
        settings = Settings(data_dir=tmp_path / str(attempt))
        barrier = threading.Barrier(8)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(start, [settings] * 8, [barrier] * 8))
        assert len(set(results)) == 1
        assert sorted(p.name for p in (tmp_path / str(attempt) / "keys").iterdir()) == [
            "ticket_signing_key.pem",
            "token_secret",
        ]
