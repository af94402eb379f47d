"""DOCX, PPTX, HTML and e-mail through unstructured, offline, with structure kept."""

from __future__ import annotations

import pytest

from ingest.chunker import Chunker
from ingest.parsers import parse
from ragsvc.errors import ParseError
from ragsvc.filetypes import detect_kind
from tests.docmaker import EML_DOC, HTML_DOC, make_docx, make_pptx, zip_bomb


def test_kinds_from_content_not_name():
    assert detect_kind("report.bin", make_docx()) == "docx"
    assert detect_kind("slides", make_pptx()) == "pptx"
    assert detect_kind("page.txt", HTML_DOC) == "html"
    assert detect_kind("message", EML_DOC) == "eml"


def test_docx_headings_and_table(embedder):
    doc = parse("docx", make_docx())
    kinds = {b.kind for b in doc.blocks}
    assert {"title", "text", "table"} <= kinds
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.text.splitlines() == ["Ship | Top speed", "Norrsken | 18 knots", "Havørn | 22 knots"]
    assert table.heading_path == "Fleet manual > Engines"
    chunks = Chunker(embedder, 200).chunk(doc)
    # The table stays whole in one chunk.
    assert any("Ship | Top speed" in c.text and "Havørn | 22 knots" in c.text for c in chunks)
    assert all(doc.full_text[c.char_start:c.char_end] == c.text for c in chunks)


def test_pptx_keeps_slide_numbers():
    doc = parse("pptx", make_pptx())
    assert doc.pages == 2
    budget = next(b for b in doc.blocks if "40,000" in b.text)
    assert budget.page == 2 and budget.heading_path == "Budget"


def test_html_sections():
    doc = parse("html", HTML_DOC)
    returns = next(b for b in doc.blocks if "30 days" in b.text)
    assert returns.heading_path == "Shop hours > Returns"


def test_eml_headers_and_body():
    doc = parse("eml", EML_DOC)
    assert "Subject: Boiler repair" in doc.blocks[0].text
    assert any("repaired on Thursday" in b.text for b in doc.blocks)


def test_zip_bomb_is_refused_without_inflating():
    with pytest.raises(ParseError, match="zip bomb"):
        parse("docx", zip_bomb())


def test_broken_docx_fails_with_reason():
    with pytest.raises(ParseError, match="zip"):
        parse("docx", b"this is not a zip")
