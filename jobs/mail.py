"""Sending the fans' emails: over SMTP when ``BOXOFFICE_SMTP_HOST`` is set, else as .eml
files in ``<data folder>/mail`` (what a local run and a demo use).

At least once, like the outbox that triggers it: a job repeated after a crash may send a
message twice, with the same Message-ID (mail clients fold such duplicates); the .eml folder
keeps one file per Message-ID.
"""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path

from booking import mail
from booking.keys import load_signing_keys
from booking.settings import Settings, get_settings
from jobs.db import job_session


def _send_smtp(settings: Settings, message: EmailMessage) -> None:
    assert settings.smtp_host is not None
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password is not None:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(message)


def _write_eml(folder: Path, message: EmailMessage) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = str(message["Message-ID"]).strip("<>").replace("@", "-at-") + ".eml"
    path = folder / name
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(bytes(message))
    temporary.replace(path)  # whole files only: a reader never sees half a message
    return path


async def deliver(message: EmailMessage, settings: Settings | None = None) -> str:
    """Send one message; returns where it went."""
    settings = settings or get_settings()
    if settings.smtp_host:
        await asyncio.to_thread(_send_smtp, settings, message)
        return f"smtp:{settings.smtp_host}"
    return str(await asyncio.to_thread(_write_eml, settings.data_dir / "mail", message))


async def send_order_confirmation(order_id: str, fact_id: str) -> str | None:
    """After ``order.confirmed``: the fan's tickets, as PDFs, by email."""
    settings = get_settings()
    keys = load_signing_keys(settings)
    async with job_session() as session:
        message = await mail.order_confirmation(
            session,
            order_id=uuid.UUID(order_id),
            message_id=uuid.UUID(fact_id),
            sender=settings.mail_from,
            signing_key=keys.ticket_key,
        )
    return await deliver(message, settings) if message is not None else None


async def send_refund_notice(hold_id: str, reason: str, fact_id: str) -> str | None:
    """After ``hold.refund_required``: tell the fan why their payment is coming back."""
    settings = get_settings()
    async with job_session() as session:
        message = await mail.refund_notice(
            session,
            hold_id=uuid.UUID(hold_id),
            reason=reason,
            message_id=uuid.UUID(fact_id),
            sender=settings.mail_from,
        )
    return await deliver(message, settings) if message is not None else None
