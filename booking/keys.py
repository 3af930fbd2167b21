"""Signing keys: the Ed25519 key that signs tickets and the HMAC secret for admission tokens.

Given in settings, they are used as given. Otherwise they are generated once into
``<data>/keys`` (readable by the owner only) and reused, so tickets issued before a restart
still verify after it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from booking.settings import Settings

TICKET_KEY_FILE = "ticket_signing_key.pem"
TOKEN_SECRET_FILE = "token_secret"  # noqa: S105 - a file name, not a secret


class SigningKeyError(Exception):
    """A configured or stored key cannot be read; the message names where it came from."""


@dataclass(frozen=True)
class SigningKeys:
    ticket_key: Ed25519PrivateKey
    token_secret: bytes

    @property
    def ticket_public_key(self) -> Ed25519PublicKey:
        return self.ticket_key.public_key()

    def ticket_public_pem(self) -> str:
        return self.ticket_public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def _write_private(path: Path, data: bytes) -> None:
    """Publish ``data`` at ``path`` whole or not at all.

    Raises:
        FileExistsError: another process published its key first (keep that one).
    """
    # Written aside, then hard-linked into place: a link is atomic and never replaces an
    # existing file, so two processes starting at once neither overwrite each other's fresh
    # key nor read one half-written (creating the file itself with O_EXCL and then writing
    # it left a moment in which a rival read an empty key).
    fd, aside = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(aside, path)
    finally:
        os.unlink(aside)


def _load_ticket_key(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise SigningKeyError(f"{source} is not a PEM private key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{source} must be an Ed25519 key")
    return key


def _new_ticket_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _stored(path: Path, make: Callable[[], bytes]) -> bytes:
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            _write_private(path, make())
    return path.read_bytes()


def load_signing_keys(settings: Settings) -> SigningKeys:
    """The keys from settings, else from the data folder, generating any that are missing.

    Raises:
        SigningKeyError: a configured or stored key is malformed.
    """
    key_dir = settings.data_dir / "keys"
    if settings.ticket_signing_key is not None:
        ticket_key = _load_ticket_key(
            settings.ticket_signing_key.get_secret_value().encode(), "BOXOFFICE_TICKET_SIGNING_KEY"
        )
    else:
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = key_dir / TICKET_KEY_FILE
        ticket_key = _load_ticket_key(_stored(path, _new_ticket_key_pem), str(path))

    if settings.token_secret is not None:
        token_secret = settings.token_secret.get_secret_value().encode()
    else:
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        token_secret = _stored(key_dir / TOKEN_SECRET_FILE, lambda: secrets.token_bytes(32))
    if len(token_secret) < 32:
        raise SigningKeyError("the admission-token secret must be at least 32 bytes")
    return SigningKeys(ticket_key=ticket_key, token_secret=token_secret)
