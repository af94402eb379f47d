"""One document through the pipeline: parse → chunk → embed → rows + vectors → ready."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ingest.chunker import Chunker
from ingest.parsers import parse
from ragsvc.db import Chunk, Document, DocumentStatus
from ragsvc.embedder import Embedder
from ragsvc.errors import IngestError
from ragsvc.index_store import IndexStore

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, sessions: sessionmaker[Session], embedder: Embedder, store: IndexStore,
                 chunk_tokens: int) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.store = store
        self.chunker = Chunker(embedder, chunk_tokens)

    def process(self, document_id: str) -> dict:
        """Ingest one document; raises ``IngestError`` with a user-facing reason when it cannot."""
        t0 = time.perf_counter()
        with self.sessions() as session:
            doc = session.get(Document, document_id)
            if doc is None:
                raise IngestError("The document was deleted before it could be ingested.")
            path, kind, collection_id = Path(doc.storage_path), doc.kind, doc.collection_id
            old_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == document_id)))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IngestError(f"The stored file is missing or unreadable ({exc}).") from exc

        parsed = parse(kind, data)
        t_parsed = time.perf_counter()
        chunks = self.chunker.chunk(parsed)
        if not chunks:
            raise IngestError("No text could be extracted from the document.")
        t_chunked = time.perf_counter()
        vectors = self.embedder.embed([c.embedding_input() for c in chunks])
        t_embedded = time.perf_counter()

        with self.sessions() as session:
            doc = session.get(Document, document_id)
            if doc is None:
                raise IngestError("The document was deleted while it was being ingested.")
            # A retried job starts clean: drop what an earlier attempt left behind.
            session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            rows = [
                Chunk(document_id=document_id, ordinal=i, text=c.text, heading_path=c.heading_path,
                      page_start=c.page, page_end=c.page, char_start=c.char_start, char_end=c.char_end,
                      token_count=c.token_count)
                for i, c in enumerate(chunks)
            ]
            session.add_all(rows)
            session.flush()
            ids = [r.id for r in rows]
            self.store.remove(collection_id, old_ids)
            # Vectors go in before the commit that makes the document ready; if the commit fails the
            # vectors are orphans that retrieval ignores (no row), and a retry overwrites them.
            self.store.add(collection_id, ids, vectors)
            doc.status = DocumentStatus.READY
            doc.error = None
            doc.pages = parsed.pages
            doc.chunks = len(rows)
            doc.glued_word_ratio = parsed.glued_word_ratio
            session.commit()
        t_done = time.perf_counter()
        stats = {
            "chunks": len(chunks), "pages": parsed.pages,
            "parse_s": round(t_parsed - t0, 3), "chunk_s": round(t_chunked - t_parsed, 3),
            "embed_s": round(t_embedded - t_chunked, 3), "store_s": round(t_done - t_embedded, 3),
        }
        log.info("ingested %s: %s", document_id, stats)
        return stats
