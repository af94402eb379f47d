"""Real documents the tests write themselves: PDFs through reportlab, text and Markdown."""

from __future__ import annotations

import io

FACT_PAGES = [
    "Operations manual for the harbour district. The Zorblax reactor was built in Oslo in 1987. "
    "It produces 40 megawatts of power for the northern harbour.",
    "Bridges of the district. The Quintaro bridge is painted bright orange. "
    "It spans 412 meters across the Velden river and opened to traffic in 1962.",
    "Food and culture. The chef Amira Solberg opened her first restaurant in Bergen in 2004. "
    "Her menu is known for smoked trout.",
]


def make_pdf(pages: list[str], password: str | None = None) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, encrypt=password)
    for text in pages:
        t = c.beginText(50, 780)
        t.setFont("Helvetica", 11)
        line = ""
        for word in text.split():  # wrap at ~85 characters so text stays on the page
            if len(line) + len(word) > 85:
                t.textLine(line)
                line = ""
            line = f"{line} {word}".strip()
        t.textLine(line)
        c.drawText(t)
        c.showPage()
    c.save()
    return buf.getvalue()


def make_image_only_pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.rect(100, 100, 300, 300, fill=1)  # drawing, no text layer
    c.showPage()
    c.save()
    return buf.getvalue()


MARKDOWN_DOC = """# Garden handbook

Welcome to the community garden. Members share tools and water.

## Watering

The tomato beds are watered every Tuesday at 6 pm by the volunteer on duty.
Hoses are stored in the blue shed.

## Compost

Kitchen scraps go in the left bin. The compost is turned on the first Sunday of each month.
"""

TEXT_DOC = """Library notice.

The reading room of the Elmsworth library closes at 9 pm on Fridays.

Borrowers may keep up to twelve books for three weeks.
"""
