"""Ticket renderings: the QR code of a token as SVG, a one-page printable PDF ticket, and an
order's tickets as one PDF with a page each.

Pure functions of their input: the same ticket renders to the same bytes, so a ticket can be
re-sent or re-downloaded without a second, different code appearing.
"""

from __future__ import annotations

import datetime as dt
import io
import unicodedata
from collections.abc import Sequence

import segno
from fpdf import FPDF
from fpdf.enums import Align, RenderStyle, XPos, YPos

from booking.errors import TicketRevoked
from booking.tickets.service import TicketView

# Level M restores up to 15% of damaged modules: enough for a scuffed print or a cracked
# phone screen, while keeping a ~200-character token at a size phones scan easily.
QR_ERROR_LEVEL = "m"
QR_BORDER = 4  # the quiet zone the QR standard requires, in modules
# One mask pattern for every code, instead of scoring all eight and keeping the best: the
# scoring was four fifths of the cost of a code (about 9 ms of pure Python per ticket, the
# largest share of the worker's CPU in a sale). Scanners read any of the eight, and what the
# scoring avoids (long runs, blocks, finder-like patterns) is rare in a signed token's bytes,
# which are as good as random, whichever mask is applied.
QR_MASK = 0

_PAGE_WIDTH = 210.0  # A4, millimetres
_MARGIN = 20.0
_QR_SIZE = 80.0


def qr_code(token: str) -> segno.QRCode:
    """The QR code (never a Micro QR, which many gate scanners do not read) of ``token``,
    always with the same mask (``QR_MASK``)."""
    return segno.make(token, error=QR_ERROR_LEVEL, micro=False, mask=QR_MASK)


def render_qr_svg(token: str) -> str:
    """A standalone SVG document (with its namespace, no XML declaration) of the token's QR
    code, black on a transparent background, 4 units per module with the standard quiet
    zone."""
    out = io.BytesIO()
    qr_code(token).save(
        out, kind="svg", scale=4, border=QR_BORDER, xmldecl=False, svgns=True, svgclass=None, lineclass=None
    )
    return out.getvalue().decode("utf-8")


def _pdf_text(text: str) -> str:
    """``text`` in the characters the built-in PDF fonts carry (Windows-1252).

    Accented letters outside it lose their accent and anything else becomes "?": a ticket
    with a degraded title is still a ticket, one that fails to render is not.
    """
    out = []
    for char in text:
        try:
            char.encode("cp1252")
            out.append(char)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("cp1252", "ignore").decode("cp1252")
            out.append(base or "?")
    return "".join(out)


def _draw_qr(pdf: FPDF, token: str, x: float, y: float, size: float) -> None:
    # Drawn as filled rectangles (one per horizontal run of dark modules), not embedded as
    # an image: vector modules stay sharp at any print resolution.
    matrix = [list(row) for row in qr_code(token).matrix_iter(scale=1, border=QR_BORDER)]
    module = size / len(matrix)
    pdf.set_fill_color(0, 0, 0)
    fill = RenderStyle.F
    for row_index, row in enumerate(matrix):
        start: int | None = None
        for column, dark in enumerate([*row, 0]):
            if dark and start is None:
                start = column
            elif not dark and start is not None:
                # The enum, not "F": fpdf coerces a string on each of the ~800 calls.
                pdf.rect(x + start * module, y + row_index * module, (column - start) * module, module, fill)
                start = None


def _document(title: str, created: dt.datetime) -> FPDF:
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.core_fonts_encoding = "cp1252"
    pdf.set_auto_page_break(False)
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_title(_pdf_text(title))
    pdf.set_creator("Boxoffice")
    # A fixed date keeps the bytes a function of the tickets alone.
    pdf.set_creation_date(created)
    return pdf


def _page(pdf: FPDF, view: TicketView, token: str) -> None:
    local = view.local_starts_at
    width = _PAGE_WIDTH - 2 * _MARGIN
    pdf.add_page()

    def line(text: str, style: str, size: float, height: float) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(width, height, _pdf_text(text), align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line("ADMIT ONE", "B", 10, 6)
    pdf.ln(2)
    line(view.event_title, "B", 24, 11)
    if view.performer and view.performer != view.event_title:
        line(view.performer, "", 14, 8)
    pdf.ln(4)
    line(f"{view.venue_name}, {view.venue_city}", "", 13, 7)
    line(f"{local:%A %d %B %Y, %H:%M} {local:%Z} ({view.timezone})", "", 13, 7)
    pdf.ln(4)
    line(view.seat, "B", 18, 9)

    qr_top = pdf.get_y() + 8
    _draw_qr(pdf, token, (_PAGE_WIDTH - _QR_SIZE) / 2, qr_top, _QR_SIZE)
    pdf.set_y(qr_top + _QR_SIZE + 6)

    pdf.set_font("Courier", "", 9)
    for label, value in (("Order ", view.order_id), ("Ticket", view.ticket_id)):
        pdf.cell(width, 5, f"{label} {value}", align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    line("Show this code at the entrance, printed or on your phone. It admits one person.", "", 10, 5)


def render_ticket_pdf(view: TicketView) -> bytes:
    """A one-page A4 PDF ticket: event, performer, venue, local date and time, seat or tier,
    the QR code, order and ticket ids.

    Raises:
        TicketRevoked: the ticket has no code to print (``view.token`` is None).
    """
    if view.token is None:
        raise TicketRevoked()
    pdf = _document(f"Ticket: {view.event_title}", view.issued_at)
    _page(pdf, view, view.token)
    return bytes(pdf.output())


def render_tickets_pdf(views: Sequence[TicketView]) -> bytes:
    """One A4 PDF with a page per valid ticket of ``views`` (an order's), each page as
    ``render_ticket_pdf`` draws it; revoked tickets are left out, so a download after a
    cancellation never shows a code that no longer admits anyone.

    Raises:
        TicketRevoked: none of the tickets has a code to print.
    """
    valid = [(view, view.token) for view in views if view.token is not None]
    if not valid:
        raise TicketRevoked()
    first = valid[0][0]
    pdf = _document(f"Tickets: {first.event_title}", max(view.issued_at for view, _ in valid))
    for view, token in valid:
        _page(pdf, view, token)
    return bytes(pdf.output())
