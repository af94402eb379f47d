"""BM25 keyword indexes (bm25s), one per collection, next to the collection's FAISS index.

bm25s indexes are not incremental, so a collection's index is rebuilt from the database (the source
of truth) after every change; rebuilding 10k chunks takes about a second. Each build goes into a new
versioned folder and a ``CURRENT`` pointer file is swapped in with ``os.replace``, so readers never see
a half-written index. Deleted chunks can never surface between a delete and the rebuild: retrieval
joins every hit to its database row.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

POINTER = "BM25_CURRENT"


def _tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False)


class KeywordStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[str, tuple[str, object, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _dir(self, collection_id: str) -> Path:
        return self.root / collection_id

    def rebuild(self, collection_id: str, ids: list[int], texts: list[str]) -> None:
        import bm25s

        folder = self._dir(collection_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".bm25.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pointer = folder / POINTER
            old = pointer.read_text().strip() if pointer.exists() else None
            if not ids:
                pointer.unlink(missing_ok=True)
            else:
                version = f"bm25-{uuid.uuid4().hex[:12]}"
                tmp = folder / f".{version}.tmp"
                model = bm25s.BM25()
                model.index(_tokenize(texts), show_progress=False)
                model.save(str(tmp), show_progress=False)
                np.save(tmp / "chunk_ids.npy", np.asarray(ids, dtype=np.int64))
                tmp.rename(folder / version)
                staged = folder / f".{POINTER}.{os.getpid()}"
                staged.write_text(version)
                os.replace(staged, pointer)
            if old:
                shutil.rmtree(folder / old, ignore_errors=True)

    def _current(self, collection_id: str):
        pointer = self._dir(collection_id) / POINTER
        try:
            version = pointer.read_text().strip()
        except FileNotFoundError:
            return None
        with self._lock:
            cached = self._cache.get(collection_id)
            if cached is None or cached[0] != version:
                import bm25s

                path = self._dir(collection_id) / version
                try:
                    model = bm25s.BM25.load(str(path))
                    ids = np.load(path / "chunk_ids.npy")
                except FileNotFoundError:  # replaced between reading the pointer and loading: retry later
                    return cached[1:] if cached else None
                cached = (version, model, ids)
                self._cache[collection_id] = cached
            return cached[1], cached[2]

    def search(self, collection_id: str, query: str, k: int) -> list[tuple[int, float]]:
        """Top-``k`` (chunk id, BM25 score) pairs with a positive score, best first."""
        current = self._current(collection_id)
        if current is None:
            return []
        model, ids = current
        tokens = _tokenize([query])
        if not tokens.ids or not tokens.ids[0]:
            return []
        k = min(k, len(ids))
        docs, scores = model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [(int(ids[d]), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def drop(self, collection_id: str) -> None:
        with self._lock:
            self._cache.pop(collection_id, None)


def rebuild_from_db(sessions, store: KeywordStore, collection_id: str) -> int:
    """Rebuild a collection's BM25 index from the chunks of its ready documents; returns their number."""
    from sqlalchemy import select

    from ragsvc.db import Chunk, Document, DocumentStatus

    with sessions() as session:
        rows = session.execute(
            select(Chunk.id, Chunk.heading_path, Chunk.text)
            .join(Document, Document.id == Chunk.document_id)
            .where(Document.collection_id == collection_id, Document.status == DocumentStatus.READY)
            .order_by(Chunk.id)
        ).all()
    # The heading path is searchable too: a question naming a section finds its chunks.
    store.rebuild(collection_id, [r.id for r in rows], [f"{r.heading_path}\n{r.text}" for r in rows])
    return len(rows)
