"""Hybrid retrieval: FAISS dense search and keyword search (the database's full-text engine) over the same chunks, fused by
reciprocal rank fusion (RRF), then loaded from SQL.

Hits whose chunk row is gone (a delete racing a search, or an ingest that crashed before commit) are
skipped: the database is the source of truth. So are hits whose row belongs to another collection: a
collection's FAISS index is only a hint (keyword entries are written and removed with the rows), and the SQL that turns ids into text filters by the
collection and by ``ready``, so an orphan vector whose id later names another collection's chunk can
never hand that chunk's text out (issue 12, item 3). Each passage keeps its dense and keyword scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ragsvc.db import Chunk, Document, DocumentStatus
from ragsvc.embedder import Embedder
from ragsvc.index_store import IndexStore
from ragsvc.keyword_index import KeywordStore

RRF_K = 60  # the constant from Cormack et al. (2009); damps the weight of the very top ranks
KEYWORD_KEEP = 2  # top keyword hits always survive the relative dense cut (exact names, paths, codes)


@dataclass
class Passage:
    chunk_id: int
    document_id: str
    filename: str
    page: int | None
    page_end: int | None
    heading_path: str
    char_start: int
    char_end: int
    text: str
    score: float
    dense_score: float | None = None
    keyword_score: float | None = None
    page_label: str | None = None

    @property
    def label(self) -> str:
        where = f", page {self.page}" if self.page else ""
        if self.page_label:
            where += f" (printed {self.page_label})"
        section = f", section {self.heading_path}" if self.heading_path else ""
        return f"{self.filename}{where}{section}"


def fuse(*rankings: list[tuple[int, float]]) -> dict[int, float]:
    """Reciprocal rank fusion of ranked (id, score) lists."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (cid, _) in enumerate(ranking):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
    return fused


def retrieve(
    session: Session, embedder: Embedder, store: IndexStore, keywords: KeywordStore | None,
    collection_id: str, question: str, k: int, relative_cut: float = 0.0,
    document_ids: list[str] | None = None,
) -> list[Passage]:
    query = embedder.embed([question])[0]
    # Ask for more than k: some hits may belong to deleted or unfinished documents, or be filtered out.
    n = (k * 2 + 5) * (4 if document_ids else 1)
    dense = store.search(collection_id, query, n)
    keyword = keywords.search(session, collection_id, question, n) if keywords else []
    if not dense and not keyword:
        return []
    fused = fuse(dense, keyword)
    dense_scores = dict(dense)
    missing = [cid for cid in fused if cid not in dense_scores]
    for cid, vec in store.vectors(collection_id, missing).items():  # keyword-only hits get a cosine too
        dense_scores[cid] = float(vec @ query)
    keyword_scores = dict(keyword)
    keyword_top = {cid for cid, _ in keyword[:KEYWORD_KEEP]}
    q = (select(Chunk, Document.filename).join(Document, Document.id == Chunk.document_id)
         .where(Chunk.id.in_(list(fused)), Document.collection_id == collection_id,
                Document.status == DocumentStatus.READY))
    if document_ids:
        q = q.where(Document.id.in_(document_ids))
    rows = session.execute(q).all()
    passages = [
        Passage(c.id, c.document_id, filename, c.page_start, c.page_end, c.heading_path,
                c.char_start, c.char_end, c.text, fused[c.id], dense_scores.get(c.id), keyword_scores.get(c.id),
                c.page_label)
        for c, filename in rows
    ]
    passages.sort(key=lambda p: -p.score)
    best_dense = max((p.dense_score or 0.0 for p in passages), default=0.0)
    if relative_cut > 0 and best_dense > 0:
        floor = best_dense * relative_cut
        passages = [p for p in passages if (p.dense_score or 0.0) >= floor or p.chunk_id in keyword_top]
    return passages[:k]
