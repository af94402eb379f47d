"""Turn stored files into text blocks that keep page numbers and heading paths.

PDF: pypdf opens the file (encryption, page count) and PDFium (pypdfium2) extracts the text. pypdf's
own extraction glues words on TeX-made PDFs (12% of words on the Debian Reference PDF) and is ~17x
slower; PDFium spaces them correctly. Every page's glued-word share is measured and reported.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field

from ragsvc.errors import ParseError, ParseLimitExceeded

log = logging.getLogger(__name__)
GLUED_WORD_LETTERS = 20
_WORD = re.compile(r"[A-Za-z]+")
# Heading titles take at most this many words to find in the page text: a title comes from the PDF's
# outline (the uploader's data), and the search costs its length at every place the text could match.
MAX_HEADING_WORDS = 16
# Bookmarks searched for on one page; more still set the heading path, unsearched. Each search can scan
# the rest of the page, so an outline of thousands of bookmarks on one page cost time quadratic in size.
MAX_HEADINGS_PER_PAGE = 200
_SPACE_RUN = re.compile(r"\s+")  # greedy and never fails once started: linear


@dataclass
class Block:
    """A run of text with one page number and heading path; ``start`` is its offset in the full text."""

    text: str
    page: int | None
    heading_path: str = ""
    start: int = 0
    kind: str = "text"  # text, title, list_item, table: tables are kept whole by the chunker
    page_label: str | None = None  # the printed page number, where the PDF defines one


@dataclass(frozen=True)
class DocumentCaps:
    """Limits on a document's structure, checked before its content is read (ingest/sandbox.py adds
    the memory, CPU and time limits around the whole parse)."""

    max_pages: int = 5000
    max_office_xml_bytes: int = 128 * 1024 * 1024


def check_pages(n_pages: int, caps: DocumentCaps, what: str = "pages") -> None:
    if n_pages > caps.max_pages:
        raise ParseLimitExceeded(
            f"The document has {n_pages} {what}, more than the limit of {caps.max_pages} (RAGSVC_MAX_PAGES); "
            "split it into smaller files.", limit="RAGSVC_MAX_PAGES")


@dataclass
class ParsedDocument:
    blocks: list[Block]
    pages: int | None
    glued_word_ratio: float | None = None
    full_text: str = field(default="", repr=False)


def glued_share(text: str) -> tuple[int, int]:
    """(glued words, all words): words over 20 letters are almost always missing spaces."""
    words = _WORD.findall(text)
    return sum(1 for w in words if len(w) > GLUED_WORD_LETTERS), len(words)


def assemble(blocks: list[Block], pages: int | None, glued: float | None = None) -> ParsedDocument:
    """Join blocks into one text (two newlines apart) and record where each starts."""
    parts, pos = [], 0
    kept = [b for b in blocks if b.text.strip()]
    for b in kept:
        b.start = pos
        parts.append(b.text)
        pos += len(b.text) + 2
    return ParsedDocument(kept, pages, glued, "\n\n".join(parts))


def _clean_pdf_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"-\n(?=[a-z])", "", text)  # rejoin words hyphenated at a line end
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_pdf(data: bytes, caps: DocumentCaps = DocumentCaps()) -> ParsedDocument:
    import pypdf
    import pypdfium2 as pdfium
    from pypdf.errors import PdfReadError

    try:
        # pypdf for the encryption check only: its page tree walk costs 0.6 s on a 261-page manual,
        # while PDFium below counts pages, reads the outline and the page labels for free.
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("The PDF is encrypted with a password; upload an unencrypted copy.")
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ParseError(f"The file is not a readable PDF ({exc}).") from exc
    except Exception as exc:  # pypdf raises many types on broken input; all mean the same to the user
        raise ParseError(f"The file is not a readable PDF ({type(exc).__name__}: {exc}).") from exc

    try:
        pdf = pdfium.PdfDocument(data, password="" if reader.is_encrypted else None)
    except pdfium.PdfiumError as exc:
        raise ParseError(f"PDFium cannot open the PDF ({exc}).") from exc
    blocks: list[Block] = []
    glued = words = 0
    n_pages = len(pdf)
    try:
        check_pages(n_pages, caps)
        toc = _toc(pdf)
        path: list[str] = []
        texts = []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            texts.append(_clean_pdf_text(textpage.get_text_range()))
            textpage.close()
            page.close()
        for i, text in enumerate(_strip_running_lines(texts)):
            g, w = glued_share(text)
            glued, words = glued + g, words + w
            sections, path = _split_at_headings(text, toc.get(i, []), path)
            label = _page_label(pdf, i)
            blocks += [Block(t, i + 1, " > ".join(p), page_label=label) for t, p in sections]
    finally:
        pdf.close()
    if not any(b.text.strip() for b in blocks):
        raise ParseError(
            f"The PDF has {n_pages} page(s) but no text layer (a scan or images only); OCR is not supported yet."
        )
    return assemble(blocks, n_pages, glued / words if words else 0.0)


def _running_key(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip().lower())


def _strip_running_lines(pages: list[str]) -> list[str]:
    """Drop running headers and footers ("Debian Reference 16 / 233"): a first or last line that,
    numbers aside, repeats on at least half of the pages. They are noise in every chunk."""
    if len(pages) < 4:
        return pages
    counts: dict[str, int] = {}
    for text in pages:
        lines = [ln for ln in text.split("\n") if ln.strip()]
        for key in {_running_key(lines[0]), _running_key(lines[-1])} if lines else ():
            counts[key] = counts.get(key, 0) + 1
    running = {k for k, n in counts.items() if k and n >= len(pages) / 2}
    if not running:
        return pages
    out = []
    for text in pages:
        lines = text.split("\n")
        while lines and (not lines[0].strip() or _running_key(lines[0]) in running):
            lines.pop(0)
        while lines and (not lines[-1].strip() or _running_key(lines[-1]) in running):
            lines.pop()
        out.append("\n".join(lines))
    return out


def _page_label(pdf, index: int) -> str | None:
    """The printed page number ("16", "iv") when the PDF defines labels and it differs from the index."""
    try:
        label = pdf.get_page_label(index)
    except Exception:  # noqa: BLE001 - labels are a nicety
        return None
    return label if label and label != str(index + 1) else None


def _toc(pdf) -> dict[int, list[tuple[int, str]]]:
    """Bookmarks by page index: [(level, title)]. PDFium reads the outline of the Debian Reference in
    0.1 s where pypdf's ``outline`` takes 1.3 s, so the outline comes from PDFium too."""
    marks: dict[int, list[tuple[int, str]]] = {}
    try:
        for bm in pdf.get_toc(max_depth=8):
            dest = bm.get_dest()
            index = dest.get_index() if dest is not None else None
            title = " ".join((bm.get_title() or "").split())
            if index is not None and index >= 0 and title:
                marks.setdefault(index, []).append((bm.level, title))
    except Exception:  # noqa: BLE001 - a broken outline only costs heading paths, never the text
        log.warning("PDF outline unreadable; continuing without heading paths", exc_info=True)
    return marks


def _split_at_headings(text: str, marks: list[tuple[int, str]], path: list[str]):
    """Cut a page where its bookmarked headings start; returns ([(text, heading path)], path after)."""
    sections, pos, current = [], 0, list(path)
    for i, (level, title) in enumerate(marks):
        at = _find_heading(text, title, pos) if i < MAX_HEADINGS_PER_PAGE else None
        if at is None:  # heading not visible in the text: it still applies from here on
            current = current[:level] + [title]
            continue
        at = max(pos, _line_start(text, at))
        if text[pos:at].strip():
            sections.append((text[pos:at].strip(), current))
        current = current[:level] + [title]
        pos = at
    if text[pos:].strip():
        sections.append((text[pos:].strip(), current))
    return sections, current


def _find_heading(text: str, title: str, start: int) -> int | None:
    pattern = r"\s+".join(re.escape(w) for w in title.split()[:MAX_HEADING_WORDS])
    m = re.search(pattern, text[start:])
    return start + m.start() if m else None


def _line_start(text: str, at: int) -> int:
    """Back up to the start of the heading's line, so a number like "1.2.12" stays with its title."""
    nl = text.rfind("\n", 0, at)
    return nl + 1 if at - nl <= 16 else at


def decode_text(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"The text file is not valid UTF-8 (byte {exc.start}); save it as UTF-8.") from exc


def parse_text(data: bytes) -> ParsedDocument:
    text = decode_text(data).replace("\r\n", "\n").strip()
    if not text:
        raise ParseError("The file contains no text.")
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return assemble([Block(p.strip(), None) for p in paragraphs], None)


def parse_markdown(data: bytes) -> ParsedDocument:
    """Sections split at headings; each block carries its heading path (``A > B > C``)."""
    text = decode_text(data).replace("\r\n", "\n")
    path: list[tuple[int, str]] = []
    blocks: list[Block] = []
    buf: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            for para in _paragraphs(body):
                if para.strip():
                    blocks.append(Block(para.strip(), None, " > ".join(t for _, t in path)))
        buf.clear()

    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else md_heading(line)
        if heading:
            flush()
            level, title = heading
            path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
            buf.append(line.strip())  # the heading starts its section's first chunk
        else:
            buf.append(line)
    flush()
    if not blocks:
        raise ParseError("The file contains no text.")
    return assemble(blocks, None)


def md_heading(line: str) -> tuple[int, str] | None:
    """(level, title) of an ATX heading line (``## Title ##``), else None.

    What ``^(#{1,6})[ \t]+(.+?)[ \t#]*$`` matched, in linear time: that regex tried every length of
    the lazy title against the trailing ``[ \t#]*$``, quadratic on a long line of spaces or hashes."""
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or line[level:level + 1] not in (" ", "\t"):
        return None
    rest = line[level:].lstrip(" \t")
    if not rest:  # only blanks after the hashes: the regex's title was one of them (two at least)
        return (level, "") if len(line) - level >= 2 else None
    return level, (rest.rstrip(" \t#") or rest[0]).strip()


def _paragraphs(body: str) -> list[str]:
    """``re.split(r"\n\s*\n(?![ \t])", body)`` in linear time: split at a blank line unless the next
    line is indented (an indented block stays with its paragraph). Each whitespace run holding two
    newlines is split once, from its first newline to its last one that is not followed by a space or
    tab, which is where the regex cut; tried from every newline of a run of "\n " lines, the regex
    rescanned the rest of the run each time (quadratic)."""
    parts, pos = [], 0
    for m in _SPACE_RUN.finditer(body):
        first = body.find("\n", m.start(), m.end())
        if first < 0:
            continue
        last = body.rfind("\n", first + 1, m.end())
        while last > first and body[last + 1:last + 2] in (" ", "\t"):
            last = body.rfind("\n", first + 1, last)
        if last > first:
            parts.append(body[pos:first])
            pos = last + 1
    parts.append(body[pos:])
    return parts


PARSERS = {"pdf": parse_pdf, "text": parse_text, "markdown": parse_markdown}


def parse(kind: str, data: bytes, caps: DocumentCaps = DocumentCaps()) -> ParsedDocument:
    """Parse in this process. The worker parses through ``ingest.sandbox.parse_in_child`` instead,
    which runs this under memory, CPU and time limits."""
    if kind in ("docx", "pptx", "html", "eml"):
        # unstructured is heavy to import (spaCy): only when such a document arrives.
        from ingest import office

        if kind in ("docx", "pptx"):
            return {"docx": office.parse_docx, "pptx": office.parse_pptx}[kind](data, caps)
        return {"html": office.parse_html, "eml": office.parse_eml}[kind](data)
    if kind == "pdf":
        return parse_pdf(data, caps)
    try:
        parser = PARSERS[kind]
    except KeyError:
        raise ParseError(f"No parser for documents of kind {kind!r}.") from None
    return parser(data)
