"""`boxoffice tickets verify`: check a ticket code offline, against the published key set.

The code's signature is checked here, on this machine, with the keys of a JSON Web Key Set
(``GET /ticket-keys`` of the API, or a file saved from it) or of a PEM file (``GET
/ticket-key``, or the files of ``<data>/keys/previous``). Nothing else is asked: whether the
ticket was refunded since is the online gate check's to say (``POST /staff/checkin``).

Exit codes, as every on-call command (``console/cli_common.py``): 0 the code is genuine,
1 it is not, or the keys could not be read (``reason`` says which). The module imports only
Typer at start; the verification itself needs cryptography and msgspec (and httpx for a
URL), never the database, the web framework or a server of ours besides the one the keys
come from.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from booking.settings import Settings
    from booking.tickets.signing import TicketClaims, VerifyingKey

KEYS_PATH = "/ticket-keys"
FETCH_TIMEOUT_SECONDS = 5.0
# A key set is a few hundred bytes a key; more than this is not one.
MAX_KEYS_BYTES = 1_000_000

tickets_app = typer.Typer(help="Ticket codes.", no_args_is_help=True)


class KeysUnavailable(Exception):
    """The key set could not be fetched, read or understood; the message says where and why."""


@dataclass(frozen=True)
class Refusal:
    """Why a code is not valid: ``reason`` is stable for scripts, ``detail`` for people."""

    reason: str
    detail: str
    kid: str | None = None


def _settings(ctx: typer.Context) -> Settings | None:
    from booking.settings import Settings, SettingsError, load_settings

    found = ctx.find_root().obj
    if isinstance(found, Settings):
        return found
    try:
        return load_settings()
    except SettingsError:
        return None


def default_keys_url(settings: Settings | None) -> str:
    """The key set of the running ``boxoffice up``, else of the API the settings name."""
    from console.stack import StackInfo

    if settings is None:
        return f"http://127.0.0.1:8000{KEYS_PATH}"
    info = StackInfo.read(settings.data_dir)
    api = info.api_url if info is not None else f"http://{settings.api_host}:{settings.api_port}"
    return api.rstrip("/") + KEYS_PATH


def _fetch(url: str) -> str:
    import httpx

    try:
        response = httpx.get(url, timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=True)
    except httpx.HTTPError as error:
        why = str(error) or type(error).__name__
        raise KeysUnavailable(f"cannot fetch the ticket keys from {url}: {why}") from None
    if response.status_code != 200:
        raise KeysUnavailable(f"cannot fetch the ticket keys from {url}: HTTP {response.status_code}")
    if len(response.content) > MAX_KEYS_BYTES:
        raise KeysUnavailable(f"{url} answered {len(response.content)} bytes: not a key set")
    return response.text


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_KEYS_BYTES:
            raise KeysUnavailable(f"{path} is {path.stat().st_size} bytes: not a key set")
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise KeysUnavailable(f"cannot read the ticket keys from {path}: {error}") from None


def load_keys(source: str) -> list[VerifyingKey]:
    """The keys of ``source``: an http(s) URL or a file, holding a JSON Web Key Set or PEM
    public keys (told apart by their content, so ``/ticket-key`` works as well).

    Raises:
        KeysUnavailable: not fetched or read, or neither a usable key set nor PEM keys.
    """
    from booking.keys import SigningKeyError, parse_public_keys
    from booking.tickets.signing import KeySetInvalid, keys_from_jwks

    text = _fetch(source) if source.startswith(("http://", "https://")) else _read(Path(source))
    try:
        if text.lstrip().startswith("{"):
            try:
                document = json.loads(text)
            except ValueError as error:
                raise KeysUnavailable(f"{source} is not JSON: {error}") from None
            return keys_from_jwks(document)
        if "-----BEGIN" in text:
            return parse_public_keys(text, source)
    except (KeySetInvalid, SigningKeyError) as error:
        raise KeysUnavailable(f"{source}: {error}") from None
    raise KeysUnavailable(f"{source} is neither a JSON Web Key Set nor PEM public keys")


def check(token: str, keys: list[VerifyingKey], at: dt.datetime) -> TicketClaims | Refusal:
    """The claims of ``token`` if a key of ``keys`` trusted at ``at`` signed it, else why not.

    A code whose key is in the set but outside its window is told apart from one whose key
    is not there at all: the first was ours and has been retired.
    """
    from booking.errors import TicketKeyUnknown, TicketSignatureInvalid, TicketTokenMalformed
    from booking.tickets.signing import trusted_keys, verify

    token = token.strip()
    kid = token.split(".", 1)[0] if "." in token else None
    try:
        return verify(token, trusted_keys(keys, at))
    except TicketTokenMalformed as error:
        return Refusal("malformed", error.detail)
    except TicketSignatureInvalid:
        return Refusal(
            "bad_signature", "the signature does not match: the code is forged or was altered", kid
        )
    except TicketKeyUnknown:
        known = next((key for key in keys if key.kid == kid), None)
        if known is not None and known.not_after is not None and at > known.not_after:
            return Refusal("key_expired", f"signed by key {kid}, trusted only until {known.not_after}", kid)
        if known is not None and known.not_before is not None and at < known.not_before:
            return Refusal(
                "key_not_yet_valid", f"signed by key {kid}, trusted only from {known.not_before}", kid
            )
        return Refusal("unknown_key", f"signed by key {kid}, which is not in the key set", kid)


def _claims_document(claims: TicketClaims) -> dict[str, Any]:
    return {
        "valid": True,
        "ticket_id": str(claims.ticket_id),
        "order_id": str(claims.order_id),
        "event_id": str(claims.event_id),
        "seat": claims.seat,
        "issued_at": claims.issued_at.isoformat(),
        "kid": claims.kid,
    }


def _print_json(payload: dict[str, Any]) -> None:
    # Plain print, not Rich: scripts get exactly one JSON document.
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _refuse(refusal: Refusal, as_json: bool) -> NoReturn:
    if as_json:
        _print_json({"valid": False, "reason": refusal.reason, "detail": refusal.detail, "kid": refusal.kid})
    else:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(
            f"[bold red]boxoffice:[/] not a valid ticket code ({refusal.reason.replace('_', ' ')}): "
            f"{escape(refusal.detail)}",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(1)


# A code starts with its key id in base64url, which may begin with "-": it is the code, not
# an option (``--`` before it works too).
@tickets_app.command("verify", context_settings={"ignore_unknown_options": True})
def verify_command(
    ctx: typer.Context,
    token: Annotated[str, typer.Argument(metavar="TOKEN", help="The ticket code (what its QR code holds).")],
    keys: Annotated[
        str | None,
        typer.Option(
            "--keys",
            metavar="URL|FILE",
            help="A JSON Web Key Set or PEM public keys, by URL or file. "
            "Default: /ticket-keys of the local stack's API.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")] = False,
) -> None:
    """Check a ticket code offline against the published keys.

    Prints what a genuine code says (ticket, order, event, seat, when it was issued, which key
    signed it) and exits 0; otherwise says why it is not valid (malformed, unknown key, bad
    signature, retired key) or why the keys could not be read, and exits 1.
    """
    source = keys or default_keys_url(_settings(ctx))
    try:
        key_set = load_keys(source)
    except KeysUnavailable as error:
        _refuse(Refusal("keys_unavailable", str(error)), as_json)
    result = check(token, key_set, dt.datetime.now(dt.UTC))
    if isinstance(result, Refusal):
        _refuse(result, as_json)
    if as_json:
        _print_json(_claims_document(result))
        return
    from rich.console import Console
    from rich.markup import escape

    # Escaped: the seat is text from the catalog, not markup.
    Console().print(
        "[bold green]valid ticket code[/]\n"
        f"  ticket     {result.ticket_id}\n"
        f"  order      {result.order_id}\n"
        f"  event      {result.event_id}\n"
        f"  seat       {escape(result.seat)}\n"
        f"  issued at  {result.issued_at.isoformat()}\n"
        f"  key        {result.kid}",
        highlight=False,
        soft_wrap=True,
    )
