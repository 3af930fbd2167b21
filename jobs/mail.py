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

from sqlalchemy.ext.asyncio import AsyncSession

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


async def _confirmations(
    session: AsyncSession, settings: Settings, items: list[tuple[str, str]]
) -> dict[uuid.UUID, EmailMessage | None]:
    keys = load_signing_keys(settings)
    messages = await mail.order_confirmations(
        session,
        [(uuid.UUID(order_id), uuid.UUID(fact_id)) for order_id, fact_id in items],
        sender=settings.mail_from,
        links=mail.LinkSigning(keys.ticket_key, keys.token_secret, settings.public_base_url),
    )
    # Nothing is written: end the read so the connection is not left idle in a transaction
    # while the messages go out.
    await session.rollback()
    return messages


async def send_order_confirmation(order_id: str, fact_id: str) -> str | None:
    """One ``order.confirmed`` fact: the link to the fan's tickets, by email. (The relay
    batches them through ``send_order_confirmations``; this one serves jobs already queued.)"""
    settings = get_settings()
    async with job_session() as session:
        (message,) = (await _confirmations(session, settings, [(order_id, fact_id)])).values()
    return await deliver(message, settings) if message is not None else None


async def send_order_confirmations(items: list[tuple[str, str]]) -> int:
    """A batch of ``order.confirmed`` facts, as (order id, fact id): one job, one database
    connection and two reads for all of them, so a burst of orders costs the daemon one
    job's overhead rather than one per order. Each message is sent on its own; a failure of
    one does not stop the others, and the job fails at the end (RQ retries it; those sent
    already go again with the same Message-ID). Returns how many were sent."""
    settings = get_settings()
    async with job_session() as session:
        messages = await _confirmations(session, settings, items)
    sent = 0
    failures: list[str] = []
    for order_id, message in messages.items():
        if message is None:
            continue
        try:
            await deliver(message, settings)
            sent += 1
        except Exception as error:
            failures.append(f"{order_id}: {type(error).__name__}: {error}")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(items)} confirmations failed; first: {failures[0]}")
    return sent


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


async def send_cancellation_notices(items: list[tuple[str, str]]) -> int:
    """A batch of ``order.event_cancelled`` facts, as (order id, fact id): one read, then each
    fan told their order is refunded because its event was cancelled. As with confirmations,
    a failure of one does not stop the others and the job fails at the end (RQ retries it;
    those sent already go again with the same Message-ID). Returns how many were sent."""
    settings = get_settings()
    async with job_session() as session:
        messages = await mail.cancellation_notices(
            session,
            [(uuid.UUID(order_id), uuid.UUID(fact_id)) for order_id, fact_id in items],
            sender=settings.mail_from,
        )
        await session.rollback()
    sent = 0
    failures: list[str] = []
    for order_id, message in messages.items():
        if message is None:
            continue
        try:
            await deliver(message, settings)
            sent += 1
        except Exception as error:
            failures.append(f"{order_id}: {type(error).__name__}: {error}")
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(items)} cancellation notices failed; first: {failures[0]}"
        )
    return sent
