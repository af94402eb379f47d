"""The parse sandbox (ingest/sandbox.py) on real child processes: each limit trips and is named.

The functions below run in the child (the forkserver imports this module to find them). The
hostile documents on the real worker are in tests/test_hostile_documents.py.
"""

from __future__ import annotations

import ctypes
import os
import time

import pytest

from ingest.parsers import ParsedDocument
from ingest.sandbox import ParseLimits, parse_in_child, run_limited
from ragsvc.errors import ParseError, ParseLimitExceeded
from tests.docmaker import MARKDOWN_DOC, make_pdf

SMALL = ParseLimits(memory_mb=256, cpu_s=2, timeout_s=30)


def hog_memory() -> None:
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))  # touched: zero-filled pages are written


def burn_cpu() -> None:
    n = 0
    while True:
        n += 1


def sleep_long() -> None:
    time.sleep(600)  # no CPU: only the wall clock can stop it


def crash() -> None:
    ctypes.string_at(0)  # a segfault in C, as a buggy native parser would


def killed_by_the_kernel() -> None:
    os.kill(os.getpid(), 9)  # SIGKILL from outside our wall clock: what the OOM killer does


def abort_after_allocating() -> None:
    held = bytearray(200 * 1024 * 1024)  # most of the 256 MiB allowance, then an abort, as PDFium does
    time.sleep(1)  # long enough for the parent to see it
    os.abort()
    del held


def refuse() -> None:
    raise ParseError("The file contains no text.")


def my_pid() -> int:
    return os.getpid()


def test_a_document_parses_in_a_child_and_comes_back_whole():
    doc = parse_in_child("pdf", make_pdf(["The heron stands in the reeds.", "The otter swims."]), SMALL)
    assert isinstance(doc, ParsedDocument) and doc.pages == 2
    assert "heron" in doc.full_text and [b.page for b in doc.blocks] == [1, 2]
    md = parse_in_child("markdown", MARKDOWN_DOC.encode(), SMALL)
    assert any(b.heading_path == "Garden handbook > Watering" for b in md.blocks)


def test_each_document_gets_a_fresh_child():
    first, second = run_limited(my_pid, (), SMALL), run_limited(my_pid, (), SMALL)
    assert os.getpid() not in (first, second) and first != second


def test_memory_limit_is_named():
    with pytest.raises(ParseLimitExceeded, match=r"more than 256 MiB of memory \(RAGSVC_PARSE_MEMORY_MB\)") as err:
        run_limited(hog_memory, (), SMALL)
    assert err.value.limit == "RAGSVC_PARSE_MEMORY_MB"


def test_cpu_limit_is_named():
    with pytest.raises(ParseLimitExceeded, match=r"more than 2 s of CPU time \(RAGSVC_PARSE_CPU_S\)"):
        run_limited(burn_cpu, (), SMALL)


def test_wall_clock_limit_is_named_and_the_child_is_killed():
    limits = ParseLimits(memory_mb=256, cpu_s=60, timeout_s=2)
    with pytest.raises(ParseLimitExceeded, match=r"longer than 2 s to parse \(RAGSVC_PARSE_TIMEOUT_S\)"):
        run_limited(sleep_long, (), limits)


def test_a_crash_fails_the_document_without_blaming_a_limit():
    with pytest.raises(ParseError, match="crashed on this file \\(signal SIGSEGV\\)") as err:
        run_limited(crash, (), SMALL)
    assert not isinstance(err.value, ParseLimitExceeded)


def test_an_out_of_memory_kill_or_an_abort_near_the_limit_counts_as_the_memory_limit():
    with pytest.raises(ParseLimitExceeded, match=r"RAGSVC_PARSE_MEMORY_MB\); the system stopped it when memory ran out"):
        run_limited(killed_by_the_kernel, (), SMALL)
    with pytest.raises(ParseLimitExceeded, match=r"RAGSVC_PARSE_MEMORY_MB\); the parser crashed when an allocation"):
        run_limited(abort_after_allocating, (), SMALL)


def test_a_parse_error_keeps_its_sentence():
    with pytest.raises(ParseError, match="^The file contains no text.$") as err:
        run_limited(refuse, (), SMALL)
    assert not isinstance(err.value, ParseLimitExceeded)


def test_limits_come_from_the_settings():
    from ragsvc.settings import Settings

    limits = ParseLimits.from_settings(Settings(parse_memory_mb=100, parse_cpu_s=7, parse_timeout_s=9,
                                                max_pages=12, max_office_xml_mb=3))
    assert (limits.memory_mb, limits.cpu_s, limits.timeout_s) == (100, 7, 9)
    assert (limits.caps.max_pages, limits.caps.max_office_xml_bytes) == (12, 3 * 1024 * 1024)


# --- caps on a document's structure, checked before its content is read (in-process) ---------------

def test_page_and_slide_caps_are_named():
    from ingest.parsers import DocumentCaps, parse
    from tests.docmaker import make_pptx

    assert parse("pdf", make_pdf(["one", "two", "three"]), DocumentCaps(max_pages=3)).pages == 3
    with pytest.raises(ParseLimitExceeded, match=r"has 3 pages, more than the limit of 2 \(RAGSVC_MAX_PAGES\)"):
        parse("pdf", make_pdf(["one", "two", "three"]), DocumentCaps(max_pages=2))
    with pytest.raises(ParseLimitExceeded, match=r"has 2 slides, more than the limit of 1 \(RAGSVC_MAX_PAGES\)"):
        parse("pptx", make_pptx(), DocumentCaps(max_pages=1))


def test_office_xml_cap_counts_xml_not_media():
    import io
    import zipfile

    from ingest.office import check_zip
    from ingest.parsers import DocumentCaps

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("word/document.xml", b"<w/>" * 300_000)  # 1.2 MB of XML
        zf.writestr("word/media/image1.png", os.urandom(3_000_000))  # media: not XML
    check_zip(buf.getvalue(), "DOCX", DocumentCaps(max_office_xml_bytes=2_000_000))
    with pytest.raises(ParseLimitExceeded, match=r"RAGSVC_MAX_OFFICE_XML_MB"):
        check_zip(buf.getvalue(), "DOCX", DocumentCaps(max_office_xml_bytes=1_000_000))


def test_email_caps_pass_real_mail_and_refuse_past_them():
    from ingest.office import MAX_EMAIL_HEADER_BYTES, MAX_EMAIL_MULTIPARTS, check_email_structure
    from ingest.parsers import parse
    from tests.docmaker import EML_DOC

    assert "boiler" in parse("eml", EML_DOC).full_text
    received = "".join(f"Received: from relay{i}.example.com by mx.example.com; Mon, 2 Nov 2026\n" for i in range(500))
    check_email_structure((received + "Subject: many hops\n\nBody.\n").encode())  # 33 KiB of headers: fine
    big = ("To: " + "x" * MAX_EMAIL_HEADER_BYTES + "\n\nBody.\n").encode()
    with pytest.raises(ParseLimitExceeded, match="e-mail header block"):
        parse("eml", big)
    nested = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(MAX_EMAIL_MULTIPARTS + 1))
    with pytest.raises(ParseLimitExceeded, match=f"{MAX_EMAIL_MULTIPARTS + 1} multipart sections"):
        parse("eml", f"Subject: deep\n{nested}".encode())
