"""Dense retrieval: embed the question, search the collection's FAISS index, load chunks from SQL.

Vectors whose chunk row is gone (a delete racing a search, or an ingest that crashed before commit)
are skipped: the database is the source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ragsvc.db import Chunk, Document, DocumentStatus
from ragsvc.embedder import Embedder
from ragsvc.index_store import IndexStore


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

    @property
    def label(self) -> str:
        where = f", page {self.page}" if self.page else ""
        section = f", section {self.heading_path}" if self.heading_path else ""
        return f"{self.filename}{where}{section}"


def retrieve(
    session: Session, embedder: Embedder, store: IndexStore, collection_id: str, question: str, k: int,
    relative_cut: float = 0.0,
) -> list[Passage]:
    query = embedder.embed([question])[0]
    # Ask FAISS for a few more than k: some hits may belong to deleted or unfinished documents.
    hits = store.search(collection_id, query, k * 2 + 5)
    if not hits:
        return []
    scores = dict(hits)
    rows = session.execute(
        select(Chunk, Document.filename)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.id.in_(list(scores)), Document.status == DocumentStatus.READY)
    ).all()
    passages = [
        Passage(c.id, c.document_id, filename, c.page_start, c.page_end, c.heading_path,
                c.char_start, c.char_end, c.text, scores[c.id])
        for c, filename in rows
    ]
    passages.sort(key=lambda p: -p.score)
    if passages and relative_cut > 0 and passages[0].score > 0:
        floor = passages[0].score * relative_cut
        passages = [p for p in passages if p.score >= floor]
    return passages[:k]
