"""Parsing, chunking and the index store, on real files, the real embedder and real FAISS."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.chunker import Chunker
from ingest.parsers import glued_share, parse, parse_markdown, parse_pdf, parse_text
from ragsvc.errors import ParseError, UnsupportedMediaType
from ragsvc.filetypes import detect_kind
from ragsvc.index_store import IndexStore
from tests.docmaker import FACT_PAGES, MARKDOWN_DOC, make_image_only_pdf, make_pdf


def test_pdf_pages_keep_numbers_and_text():
    doc = parse_pdf(make_pdf(FACT_PAGES))
    assert doc.pages == 3
    assert [b.page for b in doc.blocks] == [1, 2, 3]
    assert "painted bright orange" in doc.blocks[1].text
    assert doc.glued_word_ratio == 0.0
    for b in doc.blocks:  # block offsets point into the full text
        assert doc.full_text[b.start:b.start + len(b.text)] == b.text


def test_pdf_with_empty_password_opens():
    doc = parse_pdf(make_pdf(["Open to all readers."], password=""))
    assert "Open to all readers" in doc.full_text


@pytest.mark.parametrize("data, reason", [
    (make_pdf(["Secret."], password="hunter2"), "password"),
    (make_image_only_pdf(), "no text layer"),
    (b"%PDF-1.7 garbage", "not a readable pdf"),
])
def test_pdf_failures_say_why(data, reason):
    with pytest.raises(ParseError) as err:
        parse_pdf(data)
    assert reason in err.value.detail.lower()


def test_glued_share_counts_long_words():
    assert glued_share("Thedirectorycontainsamongotherthings one sub") == (1, 3)


def test_markdown_heading_paths():
    doc = parse_markdown(MARKDOWN_DOC.encode())
    paths = {b.heading_path for b in doc.blocks}
    assert paths == {"Garden handbook", "Garden handbook > Watering", "Garden handbook > Compost"}


def test_text_must_be_utf8():
    with pytest.raises(ParseError, match="UTF-8"):
        parse_text(b"caf\xe9 au lait")


@pytest.mark.parametrize("name, data, kind", [
    ("a.pdf", b"%PDF-1.4 ...", "pdf"),
    ("no-extension", b"%PDF-1.4 ...", "pdf"),
    ("notes.md", b"# Title\ntext", "markdown"),
    ("notes.txt", "plain text \u00e9".encode(), "text"),
])
def test_detect_kind(name, data, kind):
    assert detect_kind(name, data) == kind


@pytest.mark.parametrize("name, data", [
    ("x.txt", b"\x89PNG\r\n\x1a\n"), ("x.bin", b"\x00\x01"), ("x.doc", b"\xd0\xcf\x11\xe0rest"),
    ("x.txt", b"PK\x03\x04garbage"),
])
def test_detect_kind_refuses(name, data):
    with pytest.raises(UnsupportedMediaType):
        detect_kind(name, data)


def test_chunks_never_exceed_the_model_limit_and_are_exact_slices(embedder):
    sentence = "The quick survey of harbour cranes measured lifting capacity and reach in detail. "
    long_run = "x" * 3 + " " + " ".join(f"token{i}" for i in range(900))  # one 'sentence' of ~2000 tokens
    pages = [sentence * 40, long_run, "Short last page."]
    doc = parse("pdf", make_pdf(pages))
    chunker = Chunker(embedder, chunk_tokens=200)
    chunks = chunker.chunk(doc)
    assert len(chunks) > 5
    counts = embedder.count_tokens([c.embedding_input() for c in chunks])
    assert max(counts) <= embedder.max_tokens  # nothing silently truncated
    assert counts == [c.token_count for c in chunks]
    for c in chunks:
        assert doc.full_text[c.char_start:c.char_end] == c.text
    assert {c.page for c in chunks} == {1, 2, 3}
    # Every word of the over-long page survives chunking.
    page2 = " ".join(c.text for c in chunks if c.page == 2)
    assert "token0" in page2 and "token899" in page2
    # Sentences are not cut: every page-1 chunk ends at a sentence end.
    assert all(c.text.endswith(".") for c in chunks if c.page == 1)


def test_markdown_chunks_start_at_headings(embedder):
    doc = parse_markdown(MARKDOWN_DOC.encode())
    chunks = Chunker(embedder, 200).chunk(doc)
    watering = [c for c in chunks if c.heading_path.endswith("Watering")]
    assert watering and watering[0].text.startswith("## Watering")


def test_index_store_add_search_remove_and_reload(tmp_path, embedder):
    writer = IndexStore(tmp_path, embedder.dim)
    reader = IndexStore(tmp_path, embedder.dim)  # another process's view (the API)
    texts = ["otters eat fish", "the bridge is orange", "reactors make power"]
    writer.add("c1", [10, 11, 12], embedder.embed(texts))
    hits = reader.search("c1", embedder.embed(["what colour is the bridge"])[0], 2)
    assert hits[0][0] == 11 and hits[0][1] > hits[1][1]
    writer.add("c1", [11], embedder.embed(["bridges are painted red"]))  # re-add replaces, no duplicate
    assert reader.size("c1") == 3
    assert writer.remove("c1", [11]) == 1
    assert 11 not in [i for i, _ in reader.search("c1", embedder.embed(["bridge"])[0], 3)]
    assert reader.search("missing", np.zeros(embedder.dim, dtype=np.float32), 3) == []
    writer.drop("c1")
    assert reader.size("c1") == 0


def test_pdf_outline_gives_heading_paths_and_running_headers_go():
    from tests.docmaker import make_manual_pdf

    doc = parse_pdf(make_manual_pdf())
    assert "Harbour Manual" not in doc.full_text
    by_text = {b.text.splitlines()[-1]: (b.page, b.heading_path) for b in doc.blocks}
    assert by_text["Cranes are greased weekly."] == (3, "Introduction")
    assert by_text["The ferry Norrsken sails hourly."] == (3, "Ferries")
    assert by_text["Tickets are sold on board."] == (3, "Ferries > Tickets")
    assert by_text["Children under seven travel free."] == (4, "Ferries > Tickets")
    assert by_text["Life jackets are under the benches."] == (5, "Safety")
    assert any(b.text.startswith("2.1 Tickets") for b in doc.blocks)  # the heading starts its section


def test_ivf_collection_converts_searches_and_deletes(tmp_path):
    import faiss

    rng = np.random.default_rng(1)
    centers = rng.standard_normal((40, 384)).astype(np.float32)
    vecs = centers[rng.integers(0, 40, 6000)] + 0.6 * rng.standard_normal((6000, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    writer = IndexStore(tmp_path, 384, kind="ivf", ivf_min_vectors=5000, nprobe=16)
    reader = IndexStore(tmp_path, 384, kind="ivf", nprobe=16)
    writer.add("c", list(range(1000)), vecs[:1000])
    writer.add("c", list(range(1000, 6000)), vecs[1000:])
    assert [s.kind for s in writer.segments("c")] == ["flat", "flat"]  # new documents land exact
    writer.compact("c", [s.name for s in writer.segments("c")])  # the worker's merge trains the lists
    assert [s.kind for s in writer.segments("c")] == ["ivf"]
    assert "IVF" in type(faiss.read_index(str(tmp_path / "c" / writer.segments("c")[0].name))).__name__
    exact = faiss.IndexFlatIP(384)
    exact.add(vecs)
    queries = vecs[:50] + 0.05 * rng.standard_normal((50, 384)).astype(np.float32)
    _, truth = exact.search(queries, 10)
    recall = np.mean([len(set(truth[i]) & {h for h, _ in reader.search("c", queries[i], 10)}) / 10
                      for i in range(50)])
    assert recall >= 0.95
    assert writer.remove("c", [5, 6, 7]) == 3 and reader.size("c") == 5997
    assert 5 not in {h for h, _ in reader.search("c", vecs[5], 10)}
    writer.add("c", [8], vecs[8:9])  # re-adding an id replaces it
    assert reader.size("c") == 5997
