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
# On the subject of FACT_PAGES (the harbour's reactor), close enough to pass min_relevance, but the pages
# never say who supplies its fuel: the service must say that the documents do not cover it.
NEAR_TOPIC_UNANSWERED = "Which company supplies the uranium fuel for the Zorblax reactor?"


def make_pdf(pages: list[str], password: str | None = None) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, encrypt=password, invariant=1)  # same bytes every time
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


def make_docx() -> bytes:
    from docx import Document

    d = Document()
    d.add_heading("Fleet manual", 1)
    d.add_paragraph("The ferry Norrsken carries 300 passengers between the islands.")
    d.add_heading("Engines", 2)
    d.add_paragraph("Each engine of the Norrsken is serviced every 500 running hours.")
    t = d.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("Ship", "Top speed"), ("Norrsken", "18 knots"), ("Havørn", "22 knots")]):
        t.cell(r, 0).text, t.cell(r, 1).text = a, b
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def make_pptx() -> bytes:
    from pptx import Presentation

    p = Presentation()
    for title, body in [("Quarterly plan", "Hire two welders in March."),
                        ("Budget", "The repair budget for the dry dock is 40,000 crowns.")]:
        slide = p.slides.add_slide(p.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    buf = io.BytesIO()
    p.save(buf)
    return buf.getvalue()


HTML_DOC = (b"<!DOCTYPE html><html><head><title>Shop</title></head><body><h1>Shop hours</h1>"
            b"<p>The hardware shop on Pier Road opens at 8 am.</p><h2>Returns</h2>"
            b"<p>Tools can be returned within 30 days with a receipt.</p></body></html>")

EML_DOC = (b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Boiler repair\r\n"
           b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           b"Hi Bob,\r\n\r\nThe boiler in building C will be repaired on Thursday.\r\n\r\nAnn\r\n")


def zip_bomb(name_inside: str = "word/document.xml", size: int = 600 * 1024 * 1024) -> bytes:
    """A tiny zip that claims to inflate to ``size`` bytes of zeros (streamed, so the test stays cheap)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(name_inside, "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
    return buf.getvalue()


def make_manual_pdf() -> bytes:
    """Five pages with a running header, an outline (bookmarks) and two sections on page 3."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pages = [
        [("1 Introduction", 0), "This manual covers the harbour's cranes and ferries."],
        ["The harbour was founded in 1850 by fishermen."],
        ["Cranes are greased weekly.", ("2 Ferries", 0), "The ferry Norrsken sails hourly.",
         ("2.1 Tickets", 1), "Tickets are sold on board."],
        ["Children under seven travel free."],
        [("3 Safety", 0), "Life jackets are under the benches."],
    ]
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    for number, items in enumerate(pages, 1):
        y = 800
        c.setFont("Helvetica", 9)
        c.drawString(50, y, f"Harbour Manual {number} / {len(pages)}")  # running header
        y -= 30
        for item in items:
            if isinstance(item, tuple):
                title, level = item
                key = f"k{number}-{title}"
                c.bookmarkHorizontal(key, 0, y + 20)
                c.addOutlineEntry(title.split(" ", 1)[1], key, level=level)
                c.setFont("Helvetica-Bold", 13)
                c.drawString(50, y, title)
            else:
                c.setFont("Helvetica", 11)
                c.drawString(50, y, item)
            y -= 24
        c.showPage()
    c.save()
    return buf.getvalue()
