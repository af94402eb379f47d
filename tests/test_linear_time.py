"""Everything that matches user text runs in linear time (issue 12, item 1).

One table: each row is a routine that sees user text (uploads, passages, questions, model output) and an
adversarial input of size ``n`` built to make a backtracking pattern or a rescanning loop blow up:
nested repetitions, long whitespace runs, runs of the pattern's own delimiters. The test times the
routine at ``n`` and ``4n`` and asserts the time grew at most ``MAX_RATIO`` times: 4x is linear, 16x
quadratic. No absolute time is asserted. Rows marked "guard" were already linear; the others took
quadratic or exponential time before (the exponential one is stopped by the alarm instead of hanging).
To cover a new pattern, add a row.

And at the HTTP level: an upload made to freeze the old HTML sniffing gets a normal answer while
``/health`` keeps answering.
"""

from __future__ import annotations

import gc
import itertools
import signal
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from ingest import chunker, office, parsers
from ragsvc import (answerability, citations, evaluation, filetypes, loop_guard, multihop, prompts, router, scaffold,
                    think)
from ragsvc.errors import ParseError
from tests.conftest import start_service, stop_service

MAX_RATIO = 10.0  # time(4n) / time(n): linear is ~4, quadratic ~16
MIN_SECONDS = 0.02  # each timing repeats the call until it lasts this long, so noise does not dominate
CASE_LIMIT_S = 30  # a super-linear row fails here instead of hanging the suite


def _eml(headers: bytes, body: bytes = b"Hello.\r\n") -> bytes:
    return b"From: a@example.com\r\n" + headers + b"\r\n\r\n" + body


def _parse_eml(data: bytes) -> None:
    try:
        office.parse_eml(data)
    except ParseError:  # a refused message is an answer too; only the time counts here
        pass


_calls = itertools.count()


def _parse_html_uncached(data: bytes) -> None:
    # unstructured caches its tokenizer's results per text: a new text each call, so the time is real.
    office.parse_html(data.replace(b"x</p>", b"x%d</p>" % next(_calls)))


def _guard_in_deltas(text: str) -> None:
    guard = loop_guard.LoopGuard()
    for i in range(0, len(text), 5):
        guard.feed(text[i:i + 5])
    guard.close()


# (name, routine, input of size n, n)
CASES = [
    # Uploads: the API sniffs every file's kind (filetypes.detect_kind) inside the request.
    ("html sniffing, runs of empty comments", lambda d: filetypes.detect_kind("a.txt", d),
     lambda n: b"<!---->" * n + b"x", 10),
    ("html sniffing, runs of unclosed comments", lambda d: filetypes.detect_kind("a.txt", d),
     lambda n: b"<!--" * n, 500),  # guard (the 8 KiB head keeps 4n in range)
    # Ingestion (worker): parsers and chunker.
    ("markdown heading, trailing spaces", parsers.parse_markdown, lambda n: b"# a" + b" " * n + b"x", 6000),
    ("markdown heading, trailing hashes", parsers.parse_markdown, lambda n: b"# a " + b"#" * n + b"x", 3000),
    ("markdown paragraphs, blank lines of spaces", parsers.parse_markdown,
     lambda n: b"a" + b"\n " * n + b"b", 2000),
    ("text paragraphs, whitespace runs", parsers.parse_text, lambda n: b"a\n" + b" " * n + b"b", 20000),  # guard
    ("text paragraphs, runs of \\n and spaces", parsers.parse_text, lambda n: b"a" + b"\n \n" * n + b"b",
     5000),  # guard
    ("pdf heading search, long outline title", lambda t: parsers._find_heading(t + t, t + " b", 0),
     lambda n: "a " * n, 1000),
    ("pdf headings, many bookmarks on one page",
     lambda marks: parsers._split_at_headings("x " * len(marks), marks, []),
     lambda n: [(1, f"h{i}") for i in range(n)], 500),
    ("pdf text cleaning", parsers._clean_pdf_text, lambda n: "-\n" * n + "\n" * n + " \t" * n, 20000),  # guard
    ("pdf running lines", parsers._running_key, lambda n: "1" * n + "a", 20000),  # guard
    ("sentence breaks, closing brackets", lambda t: chunker._sentence_spans(t, 0),
     lambda n: ("." + ")" * 50 + "x") * n, 200),  # guard
    ("sentence breaks, whitespace runs", lambda t: chunker._sentence_spans(t, 0),
     lambda n: "a\n" + " " * n + "b", 20000),  # guard
    ("html text, a long run without spaces (spaCy)", _parse_html_uncached,
     lambda n: b"<html><body><p>A" + b"." * n + b"x</p></body></html>", 4000),
    # The stdlib's e-mail header parsing (CPython gh-136063).
    ("e-mail, Content-Type stuffed with ;", _parse_eml,
     lambda n: _eml(b"Content-Type: text/plain" + b";" * n), 2000),
    ("e-mail, multipart Content-Type stuffed with ;", _parse_eml,
     lambda n: _eml(b"Content-Type: multipart/mixed" + b";" * n + b"; boundary=x", b"--x\r\n\r\nHi\r\n--x--"),
     2000),
    ("e-mail, encoded words in Subject:", _parse_eml, lambda n: _eml(b"Subject: " + b"=?utf-8?q?a?= " * n), 2000),
    ("e-mail, encoded words in To:", _parse_eml, lambda n: _eml(b"To: " + b"=?utf-8?q?a?= " * n), 2000),  # old: x7-x12
    ("e-mail, unterminated encoded words", _parse_eml, lambda n: _eml(b"Subject: " + b"=?utf-8?q?a" * n), 1000),
    ("e-mail body paragraphs, a whitespace run after one newline", _parse_eml,
     lambda n: _eml(b"Subject: s", b"a\n" + b" " * n + b"b"), 20000),  # guard: office._PARAGRAPH_BREAK
    ("e-mail body paragraphs, runs of newlines and spaces", _parse_eml,
     lambda n: _eml(b"Subject: s", b"a" + b"\n \t" * n + b"b"), 5000),  # guard
    ("e-mail, To: with many addresses", _parse_eml, lambda n: _eml(b"To: " + b"a@b.example, " * n), 1000),  # guard
    # Asking: passages of uploaded documents, the question, the model's output.
    ("bridge entities, capital then spaces", lambda t: multihop.bridge_entities("q", [t], 3),
     lambda n: "Ab" + " " * n + "x", 2000),
    ("bridge entities, capital words and spaces", lambda t: multihop.bridge_entities("q", [t], 3),
     lambda n: ("Ab" + " " * 200 + "x ") * n, 20),
    ("sub-questions, whitespace run", multihop.sub_questions, lambda n: "a" + " " * n + "b", 2000),
    ("router, one long word", router.route, lambda n: "a" * n, 2000),
    ("router, many comparatives", router.route, lambda n: "more " * n, 400),
    ("router, many bridge phrases", router.route, lambda n: "by the director " * n, 200),
    ("router, why with many words", router.route, lambda n: "why " + "x " * n, 1000),  # guard
    ("router, whitespace runs", router.route, lambda n: "which" + " " * n + "?" + " " * n + "x", 1000),  # guard
    ("citation punctuation, whitespace run", lambda t: citations._with_markers(t, [1]),
     lambda n: "a" + " " * n + "x", 2000),
    ("citation punctuation, run of periods", lambda t: citations._with_markers(t, [1]),
     lambda n: "a" + "." * n + "x", 2000),
    ("citation markers, unclosed lists", citations.parse_markers, lambda n: "[1" + ", 1" * n, 5000),  # guard
    ("citation sentences", citations.split_sentences, lambda n: ". [1]" * n, 2000),  # guard
    ("citation content words", citations.content_words, lambda n: "a" * n + " b1-" * n, 20000),  # guard
    ("answerability, refusal windows over many negations", answerability.declines,
     lambda n: "not the documents " * n, 500),  # guard (new code)
    ("answerability, apostrophe runs", answerability.question_terms, lambda n: "a'" * n + "x", 5000),  # guard
    ("answerability, term coverage", lambda t: answerability.retrieval_signals(t, [0.5, 0.4], [t, t]),
     lambda n: "exporter ports " * n, 500),  # guard (new code)
    ("answer normalisation", evaluation.normalize_answer, lambda n: "[1" + "; 1" * n + " x", 5000),  # guard
    ("think tags, open and close pairs", think.split_reasoning, lambda n: "<think></think>" * n, 20000),
    ("think tags, stray close tags", think.split_reasoning, lambda n: "</think>" * n, 3000),
    # The answer stream's loop guard (per delta, so also fed in small pieces) and the scaffold stripper.
    ("loop guard, all-new words", lambda t: loop_guard.drop_repeats(t),
     lambda n: " ".join(f"w{i}" for i in range(n)), 5000),  # guard (new code)
    ("loop guard, words fed as small deltas", _guard_in_deltas,
     lambda n: " ".join(f"w{i}." for i in range(n)), 5000),  # guard (new code)
    ("loop guard, runs of [", lambda t: loop_guard.drop_repeats(t), lambda n: "[" * n, 20000),  # guard (new code)
    ("loop guard, unclosed marker lists", lambda t: loop_guard.drop_repeats(t),
     lambda n: "[1" + ", 1" * n, 20000),  # guard (new code)
    ("loop guard, terminators and newlines", lambda t: loop_guard.drop_repeats(t),
     lambda n: ".\n? " * n, 20000),  # guard (new code)
    ("scaffold, runs of Question: labels", lambda t: scaffold.strip_scaffold(t, "what is apt pinning for?"),
     lambda n: "Question: " * n, 5000),  # guard (new code)
    ("scaffold, runs of labels after colons", lambda t: scaffold.strip_scaffold(t, "what is apt pinning for?"),
     lambda n: "x:" + " " * n + "Answer:" * n, 5000),  # guard (new code)
    ("scaffold, unclosed source labels", lambda t: scaffold.strip_scaffold(t, "q", ["doc.txt, page 1"]),
     lambda n: "(doc.txt " * n, 5000),  # guard (new code)
    ("scaffold, unclosed passage tags", lambda t: scaffold.strip_scaffold(t, "q"),
     lambda n: "<passage " * n, 5000),  # guard (new code)
    ("scaffold, echoed question again and again", lambda t: scaffold.strip_scaffold(t, "what is apt pinning for?"),
     lambda n: "What is apt pinning for [1]? " * n, 2000),  # guard (new code)
    ("scaffold, near-misses of the question", lambda t: scaffold.strip_scaffold(t, "a" * 60 + "?"),
     lambda n: ("a" * 59 + " ") * n, 500),  # guard (new code)
    ("passage tags, whitespace after <", lambda t: prompts.format_passages([(1, "doc", t)]),
     lambda n: "<" + " " * n + "x", 2000),
    ("passage tags, look-alikes with invisible runs", lambda t: prompts.format_passages([(1, "doc", t)]),
     lambda n: "\uff1c" + "\u200b" * n + "/pass\u200bage", 2000),  # guard (new code)
    ("passage tags, many look-alike tags", lambda t: prompts.format_passages([(1, "doc", t)]),
     lambda n: "\uff1c/pass\u200bage\uff1e" * n, 500),  # guard (new code)
]


def _keyword_tokens(text: str):
    from ragsvc.keyword_index import _tokenize

    return _tokenize([text])


CASES.append(("keyword query tokenisation", _keyword_tokens, lambda n: "a" * n + " b" * n, 20000))  # guard


def _keyword_collection_id(text: str):
    from ragsvc.keyword_index import HEX_ID

    return HEX_ID.fullmatch(text)


CASES.append(("keyword collection id check", _keyword_collection_id, lambda n: "a" * n + "!", 20000))  # guard


@contextmanager
def _time_limit(seconds: float, what: str):
    """The pattern engine checks for signals, so even a backtracking regex is interrupted here."""
    def expired(*_):
        raise TimeoutError(what)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _seconds(fn, arg, loops: int) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def growth(fn, make, n: int) -> tuple[float, float, float]:
    """(time at n, time at 4n, ratio), both timed over the same number of calls."""
    small, large = make(n), make(4 * n)
    loops = 1
    while (t_small := _seconds(fn, small, loops)) < MIN_SECONDS and loops < 100_000:
        loops *= 4
    t_large = _seconds(fn, large, loops)
    return t_small, t_large, t_large / t_small


@pytest.mark.parametrize("name,fn,make,n", CASES, ids=[c[0] for c in CASES])
def test_time_grows_linearly(name, fn, make, n):
    gc.collect()
    try:
        with _time_limit(CASE_LIMIT_S, name):
            t_small, t_large, ratio = growth(fn, make, n)
    except TimeoutError:
        pytest.fail(f"{name}: not done after {CASE_LIMIT_S} s at size 4n={4 * n} (super-linear)")
    assert ratio < MAX_RATIO, f"{name}: {t_small:.4f} s at n={n}, {t_large:.4f} s at 4n: x{ratio:.1f}"


# --- what the fixes must keep: behaviour ------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "</passage>", "<  / passage>", "</PASSAGE>", "<passage n='9'>",
    "</pass\u200bage>", "<\u200b/passage>", "</passage\u2060>", "\u200b</p\u00adassage>",  # invisible characters
    "\uff1c/passage\uff1e", "\ufe64/passage>", "<\uff0fpassage>",  # fullwidth and small forms of < and /
    "</\uff50\uff41\uff53\uff53\uff41\uff47\uff45>",  # fullwidth letters (NFKC: "passage")
    "<\u3000/\u00a0passage>",  # ideographic and no-break spaces
    "</pa\ufe00ssage>",  # a variation selector
])
def test_passage_tag_look_alikes_are_defused(text):
    block = prompts.format_passages([(1, "doc.txt", f"before {text} after")])
    # Only ragsvc's own pair of tags is left, and the document's look-alike lost its "<".
    assert block.count("<passage ") == 1 and block.count("</passage>") == 1
    assert "\u2039" in block


@pytest.mark.parametrize("text", ["a < b and c > d", "\uff1cnot a tag\uff1e", "<pass age>", "passage </p>"])
def test_text_that_is_no_passage_tag_is_kept(text):
    assert prompts.format_passages([(1, "doc.txt", text)]).count(text) == 1


def test_html_sniffing_still_sees_html_after_comments():
    assert filetypes.detect_kind("page", b"  <!-- a --> <!-- b -->\n<!DOCTYPE html><p>x") == "html"
    assert filetypes.detect_kind("page", b"<!----><HTML>") == "html"
    assert filetypes.detect_kind("page.txt", b"<!---->" * 24 + b"x") == "text"
    assert filetypes.detect_kind("page.txt", b"<!-- never closed <html>") == "text"


def test_markdown_headings_and_paragraphs_as_before():
    doc = parsers.parse_markdown(b"# Top ##\n\nintro\n\n## Sub   #  \n\npara one\n \n   code\n\npara two\n")
    assert [(b.heading_path, b.text) for b in doc.blocks] == [
        ("Top", "# Top ##"), ("Top", "intro"), ("Top > Sub", "## Sub   #"),
        ("Top > Sub", "para one\n \n   code"), ("Top > Sub", "para two")]  # an indented line stays
    assert parsers.md_heading("####### seven") is None and parsers.md_heading("#nospace") is None
    assert parsers.md_heading("# ###") == (1, "#")


def test_email_headers_are_capped_and_decoded():
    subject = "=?utf-8?q?Gr=C3=BC=C3=9Fe?="
    many = ", ".join(f"user{i}@example.com" for i in range(2000))  # far past the cap
    data = (f"From: Ann <ann@example.com>\r\nTo: {many}\r\nSubject: {subject}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nThe boiler is fixed.\r\n").encode()
    doc = office.parse_eml(data)
    head = doc.blocks[0].text
    assert "Subject: Grüße" in head and "From: Ann <ann@example.com>" in head
    to = next(line for line in head.splitlines() if line.startswith("To: "))
    assert to.endswith("…") and len(to) < office.MAX_EMAIL_HEADER_CHARS + 20
    assert doc.blocks[-1].text == "The boiler is fixed."


# --- the API keeps answering -----------------------------------------------------------------------

def test_upload_built_to_backtrack_gets_an_answer_and_health_keeps_answering(tmp_path):
    """``<!---->`` * 24 + "x" (170 bytes) held the whole API 4.3 s in the HTML sniffing regex, * 40 for
    days; httpx timeouts make this fail instead of hang on such code."""
    svc = start_service(tmp_path, None, "sqlite", engine=False)
    try:
        files = [("files", ("c24.txt", b"<!---->" * 24 + b"x", "text/plain")),
                 ("files", ("c40.txt", b"<!---->" * 40 + b"x", "text/plain"))]
        result: dict = {}

        def upload() -> None:
            with httpx.Client(base_url=svc.url, timeout=60) as c:
                try:
                    result["response"] = c.post("/v1/documents", files=files)
                except httpx.HTTPError as exc:
                    result["error"] = exc

        t = threading.Thread(target=upload)
        t.start()
        with httpx.Client(base_url=svc.url, timeout=10) as c:
            for _ in range(10):
                assert c.get("/health").status_code == 200
                if not t.is_alive():
                    break
                time.sleep(0.2)
        t.join(90)
        assert "error" not in result, f"the upload got no answer: {result.get('error')!r}"
        resp = result["response"]
        assert resp.status_code < 300, resp.text
        docs = resp.json()["documents"]
        assert len(docs) == 2
        for doc in docs:
            assert svc.wait_done(doc["id"], timeout=300)["status"] == "ready"
        assert svc.client.get("/health", timeout=10).status_code == 200
    finally:
        stop_service(svc)
