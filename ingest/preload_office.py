"""Imported once by the parse forkserver (ingest/sandbox.py): unstructured's partitioners and spaCy's
model, loaded and warmed up here, are shared by every parse child it forks. Importing them in each
child instead cost 3.6 s per DOCX, and a first partition call another 0.5 s; here they cost ~450 MiB
once, in the forkserver, shared copy-on-write."""

import io
import logging

from ingest import office

office.preload()


def _warm_up() -> None:
    """One tiny DOCX and HTML through unstructured: its first call loads more lazily."""
    from docx import Document

    buf = io.BytesIO()
    d = Document()
    d.add_heading("Warm-up", 1)
    d.add_paragraph("A short paragraph of ordinary text, so the sentence tools load.")
    d.save(buf)
    office.parse_docx(buf.getvalue())
    office.parse_html(b"<html><body><h1>Warm-up</h1><p>A short paragraph of text.</p></body></html>")


try:
    _warm_up()
except Exception:  # noqa: BLE001 - only a speed-up: the children then load what they need themselves
    logging.getLogger(__name__).warning("warming up the office parsers failed", exc_info=True)
