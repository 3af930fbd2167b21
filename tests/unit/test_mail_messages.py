"""A ``Mail`` written out directly is the message the ``email`` package would make of it: the
same bytes (for a file and for SMTP's DATA), the same SMTP envelope, and it parses back to the
same headers and body."""

from __future__ import annotations

import email
import email.policy
import email.utils
import io
import uuid
from email.generator import BytesGenerator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booking import mail
from booking.mail import Mail

SENDERS = [
    "Boxoffice <tickets@boxoffice.local>",
    "tickets@example.org",
    "Bøx Öffice <tickets@example.org>",
    '"Box, Office" <tickets@example.org>',
]
RECIPIENTS = [
    "ann@example.org",
    "a.b+c_d%e@sub.example.co.uk",
    "x" * 80 + "@example.org",
    "Ann Example <ann@example.org>",
    "zoë@example.org",
    "ann@example.org, bob@example.org",
    "=?utf-8?q?ann?=@example.org",
    "",
]
SUBJECTS = [
    "Your tickets for Aurora Lights: Arena Tour",
    "Your tickets for Björk",
    "Refund for " + "A very long title " * 8,
    "=?utf-8?q?looks_encoded?=",
    "",
]
BODIES = [
    "Short and plain.\n",
    "",
    "Non-ASCII but short: Zoë, Björk, 東京.\n",
    "A line past the limit " * 6 + "\n",
    "東京ドーム " * 30 + "\nand more\n",
    "Mixed\r\nline\rends\n\n",
    "\n".join(f"line {n} " * 12 for n in range(30)),
    "Trailing blank \nlast line without a newline",
    "Björk " * 40,
    ".\nA line that is only a dot, and From at a start:\nFrom here\n",
]


def _package(message: Mail) -> bytes:
    return bytes(message.as_email_message())


def _package_crlf(message: Mail) -> bytes:
    # What smtplib's send_message writes for DATA, but for one thing: its generator also turns
    # a body line's leading "From " into ">From " (an mbox habit), which changed the body the
    # fan read; the message sent now keeps its body as written.
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False).flatten(message.as_email_message(), linesep="\r\n")
    return out.getvalue()


def _package_envelope(message: Mail) -> tuple[str, list[str]]:
    # How smtplib's send_message takes the envelope from the headers.
    built = message.as_email_message()
    sender = email.utils.getaddresses([built["From"]])[0][1]
    return sender, [address for _, address in email.utils.getaddresses([built["To"]])]


def _same_bytes(message: Mail) -> None:
    assert message.as_bytes() == _package(message)
    assert message.as_bytes("\r\n") == _package_crlf(message)
    assert message.envelope() == _package_envelope(message)


def _same_message(message: Mail) -> None:
    _same_bytes(message)
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    built = message.as_email_message()
    for header in ("From", "To", "Subject", "Message-ID"):
        assert parsed[header] == built[header]
    assert parsed["Message-ID"] == f"<{message.message_id}@boxoffice>"
    assert parsed.get_content() == built.get_content()


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_header_and_body_is_written_as_the_email_package_writes_it(subject: str, body: str) -> None:
    for sender in SENDERS:
        for to in RECIPIENTS:
            _same_message(Mail(message_id=uuid.uuid4(), sender=sender, to=to, subject=subject, body=body))


@settings(max_examples=300, deadline=None)
@given(
    local=st.from_regex(r"[A-Za-z0-9._%+=?-]{1,70}", fullmatch=True),
    domain=st.from_regex(r"[A-Za-z0-9.-]{1,40}", fullmatch=True),
    subject=st.text(st.characters(exclude_categories=["Cs", "Zl", "Zp", "Cc"]), max_size=120),
    body=st.text(st.characters(exclude_categories=["Cs"]), max_size=400),
)
def test_any_address_subject_and_body_give_the_same_message(
    local: str, domain: str, subject: str, body: str
) -> None:
    # Addresses near and outside the plain form (dots in odd places, "=?", long ones) too: the
    # direct path must agree with the package wherever it takes them. (Bytes only: what the
    # package itself reads back from a whitespace-only subject, say, is not what it wrote.)
    _same_bytes(
        Mail(message_id=uuid.uuid4(), sender=SENDERS[0], to=f"{local}@{domain}", subject=subject, body=body)
    )


def test_a_confirmation_like_message_reads_back_with_its_link_intact() -> None:
    link = "https://tickets.example.org/orders/" + str(uuid.uuid4()) + "/tickets.pdf?key=" + "k" * 22
    body = (
        f"Your order is confirmed.\n\nTickets:\n  - Stalls, Row A, Seat 1\n\n{link}\n\n" + "word " * 30 + "\n"
    )
    message = Mail(
        message_id=uuid.uuid4(), sender=SENDERS[0], to="ann@example.org", subject="Your tickets", body=body
    )
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert link in parsed.get_content()
    _same_message(message)


@pytest.mark.parametrize("field", ["sender", "to", "subject"])
@pytest.mark.parametrize("breaker", ["\n", "\r", "\u2028"])
def test_a_header_value_that_spans_lines_is_refused_as_the_package_refuses_it(
    field: str, breaker: str
) -> None:
    values = {"sender": SENDERS[0], "to": "ann@example.org", "subject": "Tickets"}
    values[field] = "first" + breaker + "Bcc: someone@example.org"
    with pytest.raises(ValueError, match="may not contain line breaks"):
        Mail(message_id=uuid.uuid4(), body="x\n", **values)
    candidate = email.message.EmailMessage()
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        candidate[{"sender": "From", "to": "To", "subject": "Subject"}[field]] = values[field]


def test_the_line_limit_is_the_default_policys() -> None:
    assert email.policy.default.max_line_length == mail._MAX_LINE
