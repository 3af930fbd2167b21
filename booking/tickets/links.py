"""Download links for an order's tickets, as sent in the confirmation email.

The email carries a link, not the PDFs themselves: the PDF is drawn when the fan opens it,
from the tickets as they are then, so a cancelled or refunded order's link shows no code
that no longer admits anyone (an attachment would live on in the mailbox), and a sale's
confirmations cost the worker no rendering at all.

The link is ``/orders/{order_id}/tickets.pdf?key=K`` where K is an HMAC-SHA256 of the order
id under the deployment's token secret, with a label that keeps it from ever equalling a MAC
made for another purpose. Whoever holds the email can open the tickets, exactly as whoever
held the attached PDFs could; nobody can derive the key of another order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

_LABEL = b"boxoffice order tickets link v1\x00"
# 128 bits of the MAC: far beyond guessing, and a link short enough for any mail client.
_KEY_BYTES = 16


def order_link_key(secret: bytes, order_id: uuid.UUID) -> str:
    """The ``key`` of ``order_id``'s ticket link: URL-safe, 22 characters, the same for
    the same order and secret."""
    mac = hmac.new(secret, _LABEL + order_id.bytes, hashlib.sha256).digest()[:_KEY_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def order_link_key_matches(secret: bytes, order_id: uuid.UUID, key: str) -> bool:
    """Whether ``key`` is ``order_id``'s link key, compared in constant time. Any string may
    come in (a mangled link, a forged one): it is compared as UTF-8 bytes, never refused."""
    return hmac.compare_digest(
        order_link_key(secret, order_id).encode("ascii"), key.encode("utf-8", "replace")
    )


def order_tickets_path(secret: bytes, order_id: uuid.UUID) -> str:
    """The path and query of ``order_id``'s ticket link, to put after the public base URL."""
    return f"/orders/{order_id}/tickets.pdf?key={order_link_key(secret, order_id)}"
