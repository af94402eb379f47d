"""Hybrid retrieval on the real pipeline: SQLite rows, FAISS vectors, FTS5 keywords, real embedder."""

from __future__ import annotations

import pytest

from ingest.pipeline import Pipeline
from ragsvc.db.migrate import upgrade
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.documents import DocumentService, Upload
from ragsvc.embedder import SentenceTransformerEmbedder
from ragsvc.index_store import IndexStore
from ragsvc.keyword_index import KeywordStore
from ragsvc.retrieval import fuse, retrieve
from ragsvc.settings import Settings

NOTES = [
    "The pump in the engine room is inspected every morning by the duty engineer.",
    "Spare part XK-4471-B is the gasket for the bilge pump; keep two on board.",
    "The galley stove runs on diesel and must be lit with the hatch open.",
    "Life jackets are stored under the benches on the upper deck.",
    "The anchor chain is 90 meters long and marked every 10 meters.",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval")
    url = f"sqlite:///{tmp / 'r.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp / "data", index_dir=tmp / "indexes", database_url=url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    store, keywords = IndexStore(settings.index_dir, embedder.dim), KeywordStore()
    docs = DocumentService(settings, sessions, store)
    created = docs.create("boat", [Upload(f"note{i}.txt", t.encode()) for i, t in enumerate(NOTES)])
    pipeline = Pipeline(sessions, embedder, store, 200, settings.files_dir.resolve())
    for d in created:
        pipeline.process(d["id"])
    coll = pipeline.process(created[0]["id"])["collection_id"]  # re-processing is idempotent
    yield sessions, embedder, store, keywords, coll, docs, created
    engine.dispose()


def test_rrf_fusion_rewards_agreement():
    fused = fuse([(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 12.0), (1, 5.0)])
    assert max(fused, key=fused.get) == 1 and fused[3] > fused[2]


def test_keyword_search_finds_exact_codes(world):
    sessions, embedder, store, keywords, coll, *_ = world
    with sessions() as s:
        hits = retrieve(s, embedder, store, keywords, coll, "XK-4471-B", 3, relative_cut=0.5)
    assert "XK-4471-B" in hits[0].text
    assert hits[0].keyword_score and hits[0].keyword_score > 0 and hits[0].dense_score is not None


def test_dense_search_finds_paraphrases(world):
    sessions, embedder, store, keywords, coll, *_ = world
    with sessions() as s:
        hits = retrieve(s, embedder, store, keywords, coll, "where do I find a flotation vest?", 2)
    assert "Life jackets" in hits[0].text


def test_deleted_text_never_returned(world):
    from sqlalchemy import select

    from ragsvc.db import Chunk

    sessions, embedder, store, keywords, coll, docs, created = world
    anchor = next(d for d in created if d["filename"] == "note4.txt")
    with sessions() as s:
        gone = set(s.scalars(select(Chunk.id).where(Chunk.document_id == anchor["id"])))
    with sessions() as s:
        assert gone and {cid for cid, _ in keywords.search(s, coll, "anchor chain", 5)} & gone
    docs.delete(anchor["id"])
    with sessions() as s:  # at once: the keyword entries went with the rows
        assert not {cid for cid, _ in keywords.search(s, coll, "anchor chain", 5)} & gone
        hits = retrieve(s, embedder, store, keywords, coll, "How long is the anchor chain?", 5)
    assert hits and all("anchor chain" not in h.text for h in hits)
    assert not {cid for cid, _ in store.search(coll, embedder.embed(["anchor chain"])[0], 10)} & gone
