"""One document through the pipeline: parse → chunk → embed → rows + vectors → ready.

Progress (stage and fraction) is written to the document row as it goes, so
``GET /v1/documents/{id}`` shows it. A new version of a document reuses the vectors of chunks whose
text did not change, and takes the old version's place in the same transaction that makes it ready.
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
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ingest.chunker import Chunker
from ingest.lease import NO_LEASE, Lease, NoLease
from ingest.sandbox import ParseLimits, parse_in_child
from ragsvc.db import Chunk, Document, DocumentStatus
from ragsvc.db.locks import lock_jobs_then_documents
from ragsvc.embedder import Embedder
from ragsvc.errors import IngestError
from ragsvc.index_store import IndexStore
from ragsvc.keyword_index import index_document

log = logging.getLogger(__name__)
EMBED_BATCH = 128  # chunks per progress update (sentence-transformers batches inside it)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Pipeline:
    def __init__(self, sessions: sessionmaker[Session], embedder: Embedder, store: IndexStore,
                 chunk_tokens: int, files_dir: Path | None = None, parse_limits: ParseLimits | None = None) -> None:
        self.sessions = sessions
        self.parse_limits = parse_limits or ParseLimits()
        self.embedder = embedder
        self.store = store
        self.chunker = Chunker(embedder, chunk_tokens)
        self.files_dir = files_dir

    @contextmanager
    def _fenced(self, lease: Lease | NoLease) -> Iterator[Session]:
        """A session whose transaction starts with the lease check (``StaleLease`` if the job is gone).
        Whatever the caller writes before committing is fenced by that check; anything not committed
        (the fence refused, an error) rolls back when the session closes."""
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
        """Vectors of the previous version's chunks whose embedded text is unchanged, by content hash.

        Read from the rows (``chunks.embedding``, the source of truth), so reuse works whatever kind of
        index holds them; rows from before that column existed fall back to the index."""
        if not replaces_id:
            return {}
        with self.sessions() as session:
            # Only a previous version in this collection: a vector is looked up by id in this
            # collection's index, and an id from another collection's row would name something else.
            rows = session.execute(
                select(Chunk.id, Chunk.content_hash, Chunk.embedding).join(Document, Document.id == Chunk.document_id)
                .where(Chunk.document_id == replaces_id, Document.collection_id == collection_id,
                       Chunk.content_hash.in_(set(hashes)))
            ).all()
        dim = self.embedder.dim
        out = {h: np.frombuffer(blob, dtype=np.float32) for _, h, blob in rows if blob and len(blob) == 4 * dim}
        legacy = [cid for cid, h, blob in rows if h not in out]
        if legacy:
            vecs = self.store.vectors(collection_id, legacy)
            out.update({h: vecs[cid] for cid, h, _ in rows if cid in vecs and h not in out})
        return out

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
        self._progress(document_id, "parsing", 0.0, lease)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IngestError(f"The stored file is missing or unreadable ({exc}).") from exc

        # In a child process under memory, CPU and time limits: a hostile file fails alone, with the
        # limit it hit, and the heartbeat thread keeps the lease meanwhile.
        parsed = parse_in_child(kind, data, self.parse_limits)
        del data
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
        replaced = self._commit(document_id, collection_id, replaces_id, chunks, hashes, vectors, parsed,
                                reused=len(chunks) - len(todo), lease=lease)
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
                hashes: list[str], vectors: np.ndarray, parsed, reused: int,
                lease: Lease | NoLease = NO_LEASE) -> str | None:
        """Rows, then vectors, then "ready": three steps, so the index never holds a vector whose row
        was never committed (issue 12, item 3).

        1. The chunk rows are committed while the document is still ``processing``: retrieval, which
           only returns rows of ready documents of the asked collection, does not see them yet, and a
           delete from now on finds their ids (it deletes the rows and then their vectors).
        2. The vectors (already stored with the rows) are written to the collection's index: one new
           segment over just this document's vectors, and a tombstone for a failed attempt's.
        3. One transaction makes the document ready, if it still exists with exactly these rows;
           otherwise (deleted meanwhile, or taken over by another attempt) the vectors just written
           are removed again and the document is not made ready.

        A crash between 1 and 3 leaves rows that are not ready, with or without their vectors: the
        retried job replaces both, and ``ragsvc index check --repair`` removes vectors whose rows never
        became ready.

        Each step is fenced by the job's lease (issue 20, item 2), the index write included: it runs
        inside a transaction whose first statement is the lease check, and that check's UPDATE holds
        the job against a re-claim until the commit (PostgreSQL locks the job row, SQLite the
        database). So a worker that lost its lease writes no rows, no vectors and no "ready"; vectors it
        wrote before losing it belong to rows that the next attempt deletes, with their vectors, in its
        step 1.
        """
        ids, stale = self._write_rows(document_id, chunks, hashes, vectors, lease)
        try:
            with self._fenced(lease) as session:
                # What an earlier attempt of this job left behind, then this attempt's new rows (fresh ids:
                # nothing to look up, so the worker loads none of the collection's segments to write).
                self.store.remove(collection_id, stale, count=False)
                self.store.add(collection_id, ids, vectors, fresh=True)
                session.commit()  # ends the fence's transaction: the lease was held throughout
        except OSError as exc:
            # The index is written aside and renamed, so the served one is still whole; the rows stay
            # not ready and the retried upload replaces them.
            raise IngestError(f"The search index could not be written ({exc.strerror or exc}: "
                              f"{exc.filename or 'index folder'}); the served index is unchanged. Free "
                              "space or fix the index folder's permissions, then upload the file again.") from exc
        return self._make_ready(document_id, collection_id, replaces_id, ids, parsed, reused, lease)

    def _write_rows(self, document_id: str, chunks: list, hashes: list[str], vectors: np.ndarray,
                    lease: Lease | NoLease) -> tuple[list[int], list[int]]:
        """Commit the chunk rows of a not-yet-ready document; returns (their ids, ids of rows they replaced)."""
        with self._fenced(lease) as session:
            doc = session.get(Document, document_id, with_for_update=True)
            if doc is None:
                raise IngestError("The document was deleted while it was being ingested.")
            # A retried job starts clean: drop the rows an earlier attempt left behind, and learn their
            # ids (their vectors may be in the index) from the very statement that deletes them.
            stale = list(session.scalars(
                delete(Chunk).where(Chunk.document_id == document_id).returning(Chunk.id)))
            rows = [
                Chunk(document_id=document_id, ordinal=i, text=c.text, heading_path=c.heading_path,
                      page_start=c.page, page_end=c.page, page_label=c.page_label, char_start=c.char_start,
                      char_end=c.char_end, token_count=c.token_count, content_hash=h,
                      embedding=np.ascontiguousarray(v, dtype=np.float32).tobytes())
                for i, (c, h, v) in enumerate(zip(chunks, hashes, vectors))
            ]
            session.add_all(rows)
            try:
                session.flush()
                session.commit()
            except IntegrityError as exc:  # SQLite takes no row lock: a delete, or another attempt, came first
                session.rollback()
                if session.get(Document, document_id) is None:
                    raise IngestError("The document was deleted while it was being ingested.") from exc
                raise IngestError("Another ingestion attempt wrote this document's chunks meanwhile.") from exc
            return [r.id for r in rows], stale

    def _make_ready(self, document_id: str, collection_id: str, replaces_id: str | None, ids: list[int],
                    parsed, reused: int, lease: Lease | NoLease) -> str | None:
        with self._fenced(lease) as session:
            # PostgreSQL: lock the old version (its job, then its row: deleting it below cascades to its
            # job) before this one, the order a delete of the old version takes them in (its ON DELETE
            # SET NULL touches this row), so the two cannot deadlock (ragsvc/db/locks.py).
            old = None
            if replaces_id:
                lock_jobs_then_documents(session, Document.id == replaces_id)
                old = session.get(Document, replaces_id, with_for_update=True)
            # Then the write: it takes SQLite's write lock (PostgreSQL's row lock), so no delete of this
            # document can land between this check and the commit.
            found = session.execute(
                update(Document).where(Document.id == document_id).values(
                    status=DocumentStatus.READY, error=None, stage=None, progress=1.0, pages=parsed.pages,
                    chunks=len(ids), reused_chunks=reused, glued_word_ratio=parsed.glued_word_ratio)
            ).rowcount
            # Ids are never reused, so the same count, lowest and highest id mean these very rows.
            held = session.execute(select(func.count(), func.min(Chunk.id), func.max(Chunk.id))
                                   .where(Chunk.document_id == document_id)).one()
            if not found or tuple(held) != (len(ids), min(ids), max(ids)):
                session.rollback()
                self.store.remove(collection_id, ids, count=False)  # a delete may have read the ids before they were added
                if not found:
                    raise IngestError("The document was deleted while it was being ingested.")
                raise IngestError("The document's chunks were replaced by another ingestion attempt meanwhile.")
            if old is not None and old.collection_id != collection_id:
                old = None  # versions only ever replace a document of their own collection
            old_chunk_ids, old_folder = [], None
            if old is not None:
                old_chunk_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == old.id)))
                old_folder = Path(old.storage_path).parent
                session.delete(old)  # same transaction as "ready": search sees one version or the other
            index_document(session, document_id, collection_id)  # keyword search finds it once it is ready
            session.commit()
        if old is not None:
            self.store.remove(collection_id, old_chunk_ids, count=False)
            if old_folder and self.files_dir and old_folder.parent == self.files_dir.resolve():
                shutil.rmtree(old_folder, ignore_errors=True)
            return old.id
        return None
