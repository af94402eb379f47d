"""One document through the pipeline: parse → chunk → embed → rows + vectors → ready.

Progress (stage and fraction) is written to the document row as it goes, so
``GET /v1/documents/{id}`` shows it. A new version of a document reuses the vectors of chunks whose
text did not change, and takes the old version's place in the same transaction that makes it ready.

Every write for the job is fenced by the worker's lease (ingest/lease.py): each transaction that writes
starts with ``lease.check``, and the FAISS writes happen inside the fenced transaction that commits the
rows, so a worker that lost its lease writes nothing more. Between stages the pipeline stops when the
heartbeat has found the lease gone.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from ingest.chunker import Chunker
from ingest.lease import NO_LEASE, Lease, NoLease
from ingest.parsers import parse
from ragsvc.db import Chunk, Document, DocumentStatus
from ragsvc.embedder import Embedder
from ragsvc.errors import IngestError
from ragsvc.index_store import IndexStore

log = logging.getLogger(__name__)
EMBED_BATCH = 128  # chunks per progress update (sentence-transformers batches inside it)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Pipeline:
    def __init__(self, sessions: sessionmaker[Session], embedder: Embedder, store: IndexStore,
                 chunk_tokens: int, files_dir: Path | None = None) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.store = store
        self.chunker = Chunker(embedder, chunk_tokens)
        self.files_dir = files_dir

    @contextmanager
    def _fenced(self, lease: Lease | NoLease) -> Iterator[Session]:
        """A session whose transaction first passes the lease's fence; the caller commits, and anything
        not committed (the fence refused, an error) rolls back when the session closes."""
        with self.sessions() as session:
            lease.check(session)
            yield session

    def _progress(self, document_id: str, stage: str, fraction: float, lease: Lease | NoLease = NO_LEASE,
                  **counts: int | None) -> None:
        values = {"stage": stage, "progress": round(fraction, 3), **{k: v for k, v in counts.items() if v is not None}}
        with self._fenced(lease) as session:
            session.execute(update(Document).where(Document.id == document_id).values(**values))
            session.commit()

    def _reusable(self, replaces_id: str | None, collection_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        """Vectors of the previous version's chunks whose embedded text is unchanged, by content hash."""
        if not replaces_id:
            return {}
        with self.sessions() as session:
            rows = session.execute(
                select(Chunk.id, Chunk.content_hash)
                .where(Chunk.document_id == replaces_id, Chunk.content_hash.in_(set(hashes)))
            ).all()
        vecs = self.store.vectors(collection_id, [cid for cid, _ in rows])
        return {h: vecs[cid] for cid, h in rows if cid in vecs}

    def process(self, document_id: str, lease: Lease | NoLease = NO_LEASE) -> dict:
        """Ingest one document; raises ``IngestError`` with a user-facing reason when it cannot, and
        ``StaleLease`` (having written nothing more) when the worker no longer holds the job's lease."""
        t0 = time.perf_counter()
        with self.sessions() as session:
            doc = session.get(Document, document_id)
            if doc is None:
                raise IngestError("The document was deleted before it could be ingested.")
            path, kind, collection_id, replaces_id = (Path(doc.storage_path), doc.kind, doc.collection_id,
                                                      doc.replaces_id)
            old_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == document_id)))
        self._progress(document_id, "parsing", 0.0, lease)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IngestError(f"The stored file is missing or unreadable ({exc}).") from exc

        parsed = parse(kind, data)
        t_parsed = time.perf_counter()
        lease.raise_if_lost()  # parsing can take minutes: stop here if the lease went meanwhile
        self._progress(document_id, "chunking", 0.0, lease, pages=parsed.pages)
        chunks = self.chunker.chunk(parsed)
        if not chunks:
            raise IngestError("No text could be extracted from the document.")
        t_chunked = time.perf_counter()

        inputs = [c.embedding_input() for c in chunks]
        hashes = [content_hash(t) for t in inputs]
        reuse = self._reusable(replaces_id, collection_id, hashes)
        todo = [i for i, h in enumerate(hashes) if h not in reuse]
        vectors = np.zeros((len(chunks), self.embedder.dim), dtype=np.float32)
        for i, h in enumerate(hashes):
            if h in reuse:
                vectors[i] = reuse[h]
        self._progress(document_id, "embedding", 0.0, lease, chunks=len(chunks))
        # Sorted by length across the whole document, so every slice pads little (slicing an unsorted
        # list cost 6.5% extra token positions on the Debian Reference); a progress update per slice.
        todo.sort(key=lambda i: chunks[i].token_count)
        for start in range(0, len(todo), EMBED_BATCH):
            batch = todo[start:start + EMBED_BATCH]
            vectors[batch] = self.embedder.embed([inputs[i] for i in batch])
            self._progress(document_id, "embedding", (start + len(batch)) / len(todo), lease)
        t_embedded = time.perf_counter()
        self._progress(document_id, "indexing", 0.0, lease)
        replaced = self._commit(document_id, collection_id, replaces_id, chunks, hashes, vectors, old_ids,
                                parsed, reused=len(chunks) - len(todo), lease=lease)
        t_done = time.perf_counter()
        stats = {
            "collection_id": collection_id, "chunks": len(chunks), "pages": parsed.pages, "reused_chunks": len(chunks) - len(todo),
            "parse_s": round(t_parsed - t0, 3), "chunk_s": round(t_chunked - t_parsed, 3),
            "embed_s": round(t_embedded - t_chunked, 3), "store_s": round(t_done - t_embedded, 3),
            "replaced": replaced,
        }
        log.info("ingested %s: %s", document_id, stats)
        return stats

    def _commit(self, document_id: str, collection_id: str, replaces_id: str | None, chunks: list,
                hashes: list[str], vectors: np.ndarray, old_ids: list[int], parsed, reused: int,
                lease: Lease | NoLease = NO_LEASE) -> str | None:
        # Fenced, and the FAISS writes below happen inside this transaction: the fence's UPDATE holds the
        # job against a re-claim until the commit, so vectors are only written under a lease still held.
        with self._fenced(lease) as session:
            doc = session.get(Document, document_id)
            if doc is None:
                raise IngestError("The document was deleted while it was being ingested.")
            # A retried job starts clean: drop what an earlier attempt left behind.
            session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            rows = [
                Chunk(document_id=document_id, ordinal=i, text=c.text, heading_path=c.heading_path,
                      page_start=c.page, page_end=c.page, page_label=c.page_label, char_start=c.char_start,
                      char_end=c.char_end, token_count=c.token_count, content_hash=h)
                for i, (c, h) in enumerate(zip(chunks, hashes))
            ]
            session.add_all(rows)
            session.flush()
            ids = [r.id for r in rows]
            # Vectors go in before the commit that makes the document ready; if the commit fails the
            # vectors are orphans that retrieval ignores (no row), and a retry overwrites them.
            try:
                self.store.remove(collection_id, old_ids)
                self.store.add(collection_id, ids, vectors)
            except OSError as exc:
                # The index is written aside and renamed, so the served one is still whole; the rows
                # roll back with this session.
                raise IngestError(f"The search index could not be written ({exc.strerror or exc}: "
                                  f"{exc.filename or 'index folder'}); the served index is unchanged. Free "
                                  "space or fix the index folder's permissions, then upload the file again.") from exc
            old = session.get(Document, replaces_id) if replaces_id else None
            old_chunk_ids, old_folder = [], None
            if old is not None:
                old_chunk_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == old.id)))
                old_folder = Path(old.storage_path).parent
                session.delete(old)  # same transaction as "ready": search sees one version or the other
            doc.status, doc.error, doc.stage, doc.progress = DocumentStatus.READY, None, None, 1.0
            doc.pages, doc.chunks, doc.reused_chunks = parsed.pages, len(rows), reused
            doc.glued_word_ratio = parsed.glued_word_ratio
            session.commit()
        if old is not None:
            self.store.remove(collection_id, old_chunk_ids)
            if old_folder and self.files_dir and old_folder.parent == self.files_dir.resolve():
                shutil.rmtree(old_folder, ignore_errors=True)
            return old.id
        return None
