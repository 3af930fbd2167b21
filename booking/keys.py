"""Signing keys: the Ed25519 key of tickets and admission tokens, and the HMAC secret of ticket links.

Given in settings, they are used as given. Otherwise they are generated once into
``<data>/keys`` (readable by the owner only) and reused, so tickets issued before a restart
still verify after it.

Rotation: the current key signs every new ticket; earlier keys keep verifying the tickets
they signed. Their public halves are given in ``BOXOFFICE_TICKET_PREVIOUS_KEYS`` and as PEM
files in ``<data>/keys/previous/`` (both are read). Each ``PUBLIC KEY`` block may be preceded
by explanatory text (RFC 7468 allows it); lines of it reading ``Not-Before: <ISO 8601>`` or
``Not-After: <ISO 8601>`` bound when that key is trusted. The published key set is the
current key and every previous key trusted now; a gate accepts a code of any of them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from booking.settings import Settings
from booking.tickets.signing import VerifyingKey, key_id, trusted_keys

TICKET_KEY_FILE = "ticket_signing_key.pem"
TOKEN_SECRET_FILE = "token_secret"  # noqa: S105 - a file name, not a secret
PREVIOUS_KEYS_DIR = "previous"
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
# A whole line, so a time written with a space ("2027-06-30 23:59:59Z") is read, not skipped.
_WINDOW_LINE = re.compile(
    r"^[ \t]*(not-before|not-after)[ \t]*:[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE
)


class SigningKeyError(Exception):
    """A configured or stored key cannot be read; the message names where it came from."""


@dataclass(frozen=True)
class SigningKeys:
    """``ticket_key`` signs tickets; ``previous_ticket_keys`` only verify (earlier signing
    keys, each trusted within its window)."""

    ticket_key: Ed25519PrivateKey
    token_secret: bytes
    previous_ticket_keys: tuple[VerifyingKey, ...] = ()

    @property
    def ticket_public_key(self) -> Ed25519PublicKey:
        """The current key's public half: it alone verifies a newly issued ticket."""
        return self.ticket_key.public_key()

    def ticket_public_pem(self) -> str:
        return self.ticket_public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def published_keys(self, at: dt.datetime | None = None) -> list[VerifyingKey]:
        """The key set gates trust at ``at`` (default now): the current key first, then each
        previous key whose window holds ``at``, each key once."""
        at = at or dt.datetime.now(dt.UTC)
        current = VerifyingKey(self.ticket_public_key)
        published, seen = [current], {current.kid}
        for key in self.previous_ticket_keys:
            if key.kid not in seen and key.trusted_at(at):
                published.append(key)
                seen.add(key.kid)
        return published

    def verifying_keys(self, at: dt.datetime | None = None) -> list[Ed25519PublicKey]:
        """The public keys a code may be signed with at ``at`` (default now): what a gate's
        check is given, so a code of any published key is accepted."""
        at = at or dt.datetime.now(dt.UTC)
        return trusted_keys(self.published_keys(at), at)


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


def _window(explanation: str, source: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The ``Not-Before``/``Not-After`` lines of the text before one key.

    Raises:
        SigningKeyError: a time that is not ISO 8601 with a timezone, or a window that ends
            before it starts.
    """
    bounds: dict[str, dt.datetime] = {}
    for name, value in _WINDOW_LINE.findall(explanation):
        try:
            at = dt.datetime.fromisoformat(value)
        except ValueError:
            raise SigningKeyError(f"{source}: {name} {value!r} is not an ISO 8601 time") from None
        if at.tzinfo is None:
            raise SigningKeyError(f"{source}: {name} {value!r} has no timezone (add Z or +00:00)")
        bounds[name.lower()] = at
    not_before, not_after = bounds.get("not-before"), bounds.get("not-after")
    if not_before is not None and not_after is not None and not_after < not_before:
        raise SigningKeyError(f"{source}: Not-After is before Not-Before")
    return not_before, not_after


def parse_public_keys(text: str, source: str) -> list[VerifyingKey]:
    """The Ed25519 public keys of PEM ``text`` (one or more ``PUBLIC KEY`` blocks), each with
    the window its explanatory text gives. ``source`` names where the text came from, for
    the errors.

    Raises:
        SigningKeyError: no public key; a block that is not an Ed25519 public key (a private
            key is refused: only the public half of a retired key belongs here); a malformed
            window line.
    """
    keys: list[VerifyingKey] = []
    explained_from = 0
    for block in _PEM_BLOCK.finditer(text):
        label = block.group(1)
        if "PRIVATE" in label:
            raise SigningKeyError(
                f"{source} holds a private key: keep only the public half of a previous key "
                "(openssl pkey -pubout)"
            )
        if label != "PUBLIC KEY":
            raise SigningKeyError(f"{source}: expected PUBLIC KEY blocks, found {label}")
        try:
            key = serialization.load_pem_public_key(block.group(0).encode())
        except (ValueError, TypeError) as error:
            raise SigningKeyError(f"{source} is not a PEM public key: {error}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{source} must hold Ed25519 keys")
        not_before, not_after = _window(text[explained_from : block.start()], source)
        keys.append(VerifyingKey(key, not_before=not_before, not_after=not_after))
        explained_from = block.end()
    if not keys:
        raise SigningKeyError(f"{source} holds no PEM public key")
    return keys


def _previous_ticket_keys(settings: Settings, key_dir: Path) -> tuple[VerifyingKey, ...]:
    """The previous keys of the setting, then of ``<keys>/previous/*.pem`` by file name."""
    keys: list[VerifyingKey] = []
    if settings.ticket_previous_keys:
        keys += parse_public_keys(settings.ticket_previous_keys, "BOXOFFICE_TICKET_PREVIOUS_KEYS")
    folder = key_dir / PREVIOUS_KEYS_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("*.pem")):
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as error:
                raise SigningKeyError(f"{path} cannot be read: {error}") from None
            keys += parse_public_keys(text, str(path))
    return tuple(keys)


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
    """The keys from settings, else from the data folder, generating any that are missing;
    with the previous ticket keys of both.

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
        raise SigningKeyError("the ticket-link secret (BOXOFFICE_TOKEN_SECRET) must be at least 32 bytes")
    previous = tuple(
        key
        for key in _previous_ticket_keys(settings, key_dir)
        # The current key listed as previous too (left there after a rollback) is the current key.
        if key.kid != key_id(ticket_key.public_key())
    )
    return SigningKeys(ticket_key=ticket_key, token_secret=token_secret, previous_ticket_keys=previous)
