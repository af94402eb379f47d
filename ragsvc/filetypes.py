"""Decide a file's kind from its content (magic bytes) first and its name second."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

from ragsvc.errors import UnsupportedMediaType

SUPPORTED = "PDF, Word (.docx), PowerPoint (.pptx), HTML, e-mail (.eml), Markdown and plain text"
KINDS = ("pdf", "docx", "pptx", "html", "eml", "markdown", "text")
_BINARY_MAGIC = {
    b"\xd0\xcf\x11\xe0": "an old Microsoft Office file (.doc/.ppt/.xls); save it as .docx or .pptx",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"\x7fELF": "a program (ELF)",
    b"{\\rtf": "an RTF document",
}
_MARKDOWN = {".md", ".markdown", ".mdown", ".mkd"}
# Checked by _looks_like_html with bytes.find, not one regex: ``(<!--.*?-->\s*)*`` backtracked
# exponentially on a run of empty comments ("<!---->" * 24 + "x" held the API for seconds).
_HTML_TAGS = (b"<!doctype html", b"<html", b"<head", b"<body")
_SPACE = re.compile(rb"\s*")  # always matches, never backtracks
_MAIL_HEADER = re.compile(rb"^(from|to|subject|date|received|return-path|message-id|mime-version|delivered-to):", re.I)


def _zip_kind(filename: str, data: bytes) -> str:
    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        # A broken zip named .docx/.pptx: accept it so the parser fails the document with its reason.
        suffix = PurePosixPath(filename.lower()).suffix
        if suffix in (".docx", ".pptx"):
            return suffix[1:]
        raise UnsupportedMediaType(f"{filename!r} is a damaged ZIP archive; ragsvc ingests {SUPPORTED}.") from None
    if "word/document.xml" in names:
        return "docx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    what = "an Excel workbook" if "xl/workbook.xml" in names else "a ZIP archive"
    raise UnsupportedMediaType(f"{filename!r} is {what}; ragsvc ingests {SUPPORTED}.")


def _looks_like_mail(head: bytes) -> bool:
    lines = head.lstrip().split(b"\n", 12)[:12]
    hits = sum(1 for line in lines if _MAIL_HEADER.match(line))
    return hits >= 2


def detect_kind(filename: str, data: bytes) -> str:
    """Return one of :data:`KINDS`; raise 415 for anything else."""
    suffix = PurePosixPath(filename.lower()).suffix
    head = data[:8192]
    if head.lstrip()[:5] == b"%PDF-":
        return "pdf"
    if suffix == ".pdf":
        # Named PDF but without the header: accept it so the parser can fail the document with its reason.
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(filename, data)
    for magic, what in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise UnsupportedMediaType(f"{filename!r} looks like {what}; ragsvc ingests {SUPPORTED}.")
    if suffix in (".docx", ".pptx"):
        return suffix[1:]  # not a zip at all: the parser will say so
    if b"\x00" in head or not _is_utf8_prefix(head):
        raise UnsupportedMediaType(f"{filename!r} is binary data of an unknown type; ragsvc ingests {SUPPORTED}.")
    if _looks_like_html(head) or suffix in (".html", ".htm", ".xhtml"):
        return "html"
    if suffix == ".eml" or _looks_like_mail(head):
        return "eml"
    return "markdown" if suffix in _MARKDOWN else "text"


def _looks_like_html(head: bytes) -> bool:
    """Leading whitespace and comments, then a doctype/html/head/body tag; one pass, linear time.
    A comment ends at the first ``-->`` (as in HTML), an unclosed one means "not HTML"."""
    pos = _SPACE.match(head).end()
    while head.startswith(b"<!--", pos):
        end = head.find(b"-->", pos + 4)
        if end < 0:
            return False
        pos = _SPACE.match(head, end + 3).end()
    start = head[pos:pos + 14].lower()
    return start.startswith(_HTML_TAGS)


def _is_utf8_prefix(head: bytes) -> bool:
    # The 8 KiB cut may split a multi-byte character: allow up to 3 dangling bytes.
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False
