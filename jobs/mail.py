"""Sending the fans' emails: over SMTP when ``BOXOFFICE_SMTP_HOST`` is set, else as .eml
files in ``<data folder>/mail`` (what a local run and a demo use).

At least once, like the outbox that triggers it: a job repeated after a crash may send a
message twice, with the same Message-ID (mail clients fold such duplicates); the .eml folder
keeps one file per Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import smtplib
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from booking import mail
from booking.keys import load_signing_keys
from booking.mail import Mail
from booking.settings import Settings, get_settings
from jobs.db import job_session


def _connect(settings: Settings) -> smtplib.SMTP:
    assert settings.smtp_host is not None
    smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30)
    try:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password is not None:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
    except BaseException:
        smtp.close()
        raise
    return smtp


def _submit(smtp: smtplib.SMTP, message: Mail) -> None:
    sender, recipients = message.envelope()
    if (sender + "".join(recipients)).isascii():
        smtp.sendmail(sender, recipients, message.as_bytes("\r\n"))
    else:
        # An address beyond ASCII needs SMTPUTF8 and the headers in raw UTF-8: what
        # ``send_message`` does with the email package's own rendering.
        smtp.send_message(message.as_email_message())


def _session_gone(error: Exception) -> bool:
    """Whether the server had ended the session before the message was accepted: it closed
    the connection (an idle timeout) or answered 421 (a cap on messages per session), to
    MAIL, DATA or a recipient."""
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code == 421
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in error.recipients.values())
    return False


def _send_smtp(settings: Settings, messages: Sequence[Mail]) -> list[str | Exception]:
    """Each message over one SMTP session for the batch, not a connection (and a TLS
    handshake and login) per message. A message that fails is that message's failure only:
    the session it failed on is dropped, its state unknown, and the next message opens a new
    one. A message that finds its reused session ended by the server goes once more on a new
    one. A message counts as sent once the server accepted it, whatever QUIT answers."""
    where = f"smtp:{settings.smtp_host}"
    results: list[str | Exception] = []
    smtp: smtplib.SMTP | None = None
    try:
        for message in messages:
            while True:
                reused = smtp is not None
                try:
                    if smtp is None:
                        smtp = _connect(settings)
                    _submit(smtp, message)
                except Exception as error:
                    if smtp is not None:
                        smtp.close()
                        smtp = None
                    if reused and _session_gone(error):
                        continue
                    results.append(error)
                else:
                    results.append(where)
                break
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
    return results


def _write_eml(directory: int, message: Mail) -> str:
    """Write ``message`` into the folder open as ``directory``; returns the file's name.

    Whole files only: the bytes go to a temporary file of this write's own, renamed over the
    .eml, so a reader never sees half a message, and two writers of the same message (a job
    and its retry, two workers) never write into one file. A failed write removes its
    temporary file. Names are relative to the folder's descriptor: the kernel does not walk
    the folder's path again for each file of a batch.
    """
    name = message.message_id_header.strip("<>").replace("@", "-at-")
    temporary = f"{name}.{secrets.token_hex(8)}.tmp"
    data = memoryview(message.as_bytes())
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=directory)
    try:
        try:
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(temporary, name + ".eml", src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
        raise
    return name + ".eml"


def _write_emls(folder: Path, messages: Sequence[Mail]) -> list[str | Exception]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        return [error] * len(messages)
    results: list[str | Exception] = []
    try:
        for message in messages:
            try:
                results.append(os.path.join(folder, _write_eml(directory, message)))
            except Exception as error:
                results.append(error)
    finally:
        os.close(directory)
    return results


def _send(settings: Settings, messages: Sequence[Mail]) -> list[str | Exception]:
    if settings.smtp_host:
        return _send_smtp(settings, messages)
    return _write_emls(settings.data_dir / "mail", messages)


async def deliver_all(messages: Sequence[Mail], settings: Settings | None = None) -> list[str | Exception]:
    """Send each message, in order, in one worker thread for all of them (a thread hop per
    batch, not per message). Returns, for each, where it went or the error that stopped it:
    a failure of one does not stop the others."""
    if not messages:
        return []
    return await asyncio.to_thread(_send, settings or get_settings(), list(messages))


async def deliver(message: Mail, settings: Settings | None = None) -> str:
    """Send one message; returns where it went.

    Raises:
        Exception: whatever stopped it (an ``OSError`` or ``smtplib.SMTPException``).
    """
    (result,) = await deliver_all([message], settings)
    if isinstance(result, Exception):
        raise result
    return result


async def _deliver_batch(settings: Settings, messages: dict[uuid.UUID, Mail | None], what: str) -> int:
    """Send the messages of a batch job (None: nobody to tell); returns how many went.

    Raises:
        RuntimeError: any failed, after all the others were sent (RQ retries the job; those
            sent already go again with the same Message-ID).
    """
    pending = [(order_id, message) for order_id, message in messages.items() if message is not None]
    results = await deliver_all([message for _, message in pending], settings)
    failures = [
        f"{order_id}: {type(result).__name__}: {result}"
        for (order_id, _), result in zip(pending, results, strict=True)
        if isinstance(result, Exception)
    ]
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(messages)} {what} failed; first: {failures[0]}")
    return len(pending)


async def _confirmations(
    session: AsyncSession, settings: Settings, items: list[tuple[str, str]]
) -> dict[uuid.UUID, Mail | None]:
    keys = load_signing_keys(settings)
    messages = await mail.order_confirmations(
        session,
        [(uuid.UUID(order_id), uuid.UUID(fact_id)) for order_id, fact_id in items],
        sender=settings.mail_from,
        links=mail.LinkSigning(keys.token_secret, settings.public_base_url),
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
    connection and one read for all of them, and one thread hop (and SMTP session) to send
    them, so a burst of orders costs the daemon one job's overhead rather than one per order.
    A failure of one message does not stop the others, and the job fails at the end (RQ
    retries it; those sent already go again with the same Message-ID). Returns how many were
    sent."""
    settings = get_settings()
    async with job_session() as session:
        messages = await _confirmations(session, settings, items)
    return await _deliver_batch(settings, messages, "confirmations")


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
    return await _deliver_batch(settings, messages, "cancellation notices")
