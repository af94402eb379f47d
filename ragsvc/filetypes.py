"""Decide a file's kind from its content (magic bytes) first and its name second."""

from __future__ import annotations

from pathlib import PurePosixPath

from ragsvc.errors import UnsupportedMediaType

SUPPORTED = "PDF, plain text (.txt) and Markdown (.md)"
_BINARY_MAGIC = {
    b"PK\x03\x04": "a ZIP container (DOCX, PPTX, XLSX or ZIP)",
    b"\xd0\xcf\x11\xe0": "an old Microsoft Office file",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"\x7fELF": "a program (ELF)",
}
_NOT_YET = {".docx", ".pptx", ".html", ".htm", ".eml", ".doc", ".ppt", ".xlsx", ".rtf", ".odt"}
_MARKDOWN = {".md", ".markdown", ".mdown", ".mkd"}


def detect_kind(filename: str, data: bytes) -> str:
    """Return ``pdf``, ``markdown`` or ``text``; raise 415 for anything else."""
    suffix = PurePosixPath(filename.lower()).suffix
    head = data[:8192]
    if head.lstrip()[:5] == b"%PDF-":
        return "pdf"
    if suffix == ".pdf":
        # Named PDF but without the header: accept it so the parser can fail the document with its reason.
        return "pdf"
    for magic, what in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise UnsupportedMediaType(
                f"{filename!r} looks like {what}; ragsvc can ingest {SUPPORTED} (Word, PowerPoint, HTML and "
                "e-mail support is planned)."
            )
    if suffix in _NOT_YET:
        raise UnsupportedMediaType(f"{filename!r}: {suffix} files are not supported yet; ragsvc ingests {SUPPORTED}.")
    if b"\x00" in head or not _is_utf8_prefix(head):
        raise UnsupportedMediaType(
            f"{filename!r} is binary data of an unknown type; ragsvc ingests {SUPPORTED}."
        )
    return "markdown" if suffix in _MARKDOWN else "text"


def _is_utf8_prefix(head: bytes) -> bool:
    # The 8 KiB cut may split a multi-byte character: allow up to 3 dangling bytes.
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False
