"""Client-supplied text made fit for a record kept for people to read (audit rows, the
path an idempotency key was used on)."""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def storable(text: str, limit: int) -> str:
    """``text`` as PostgreSQL can store it in a ``varchar(limit)`` or a JSONB string: NUL
    characters (which neither takes) become U+FFFD, and anything past ``limit`` characters
    is cut, ending in an ellipsis so a reader knows. Only for descriptions: never compare or
    look up by the result."""
    cleaned = text.replace("\x00", REPLACEMENT)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"
