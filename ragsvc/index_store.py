"""FAISS indexes, one folder per collection, vectors keyed by ``Chunk.id``.

Writers (ingestion workers, deletes) take an exclusive file lock, load the newest index from disk,
change it, write a temporary file and ``os.replace`` it in: readers never see a half-written index.
Readers (the API) keep the index in memory and reload it when the file on disk changed, so new
documents become searchable without a restart.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from ragsvc.errors import RagsvcError

INDEX_FILE = "index.faiss"


@dataclass
class _Cached:
    stamp: tuple[int, int, int]
    index: faiss.Index


class IndexStore:
    """Exact inner-product search (vectors are normalised, so scores are cosine similarities)."""

    def __init__(self, root: Path, dim: int) -> None:
        self.root = Path(root)
        self.dim = dim
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, _Cached] = {}
        self._cache_lock = threading.Lock()

    def _dir(self, collection_id: str) -> Path:
        return self.root / collection_id

    def _new_index(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @contextmanager
    def _write_lock(self, collection_id: str) -> Iterator[Path]:
        folder = self._dir(collection_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, path: Path) -> faiss.Index:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:  # FAISS reports I/O and format errors as RuntimeError
            raise RagsvcError(f"The index file {path} cannot be read: {exc}") from exc
        if index.d != self.dim:
            raise RagsvcError(
                f"The index at {path} holds {index.d}-dimensional vectors but the embedding model makes "
                f"{self.dim}; re-ingest the collection after changing the embedding model."
            )
        return index

    def _write(self, folder: Path, index: faiss.Index) -> None:
        tmp = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / INDEX_FILE)

    def add(self, collection_id: str, ids: list[int], vectors: np.ndarray) -> None:
        if not ids:
            return
        with self._write_lock(collection_id) as folder:
            path = folder / INDEX_FILE
            index = self._read(path) if path.exists() else self._new_index()
            id_arr = np.asarray(ids, dtype=np.int64)
            index.remove_ids(id_arr)  # re-adding the same chunk (a retried job) must not duplicate it
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), id_arr)
            self._write(folder, index)

    def remove(self, collection_id: str, ids: list[int]) -> int:
        if not ids:
            return 0
        with self._write_lock(collection_id) as folder:
            path = folder / INDEX_FILE
            if not path.exists():
                return 0
            index = self._read(path)
            removed = int(index.remove_ids(np.asarray(ids, dtype=np.int64)))
            self._write(folder, index)
            return removed

    def drop(self, collection_id: str) -> None:
        shutil.rmtree(self._dir(collection_id), ignore_errors=True)
        with self._cache_lock:
            self._cache.pop(collection_id, None)

    def _current(self, collection_id: str) -> faiss.Index | None:
        path = self._dir(collection_id) / INDEX_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._cache_lock:
            cached = self._cache.get(collection_id)
            if cached is None or cached.stamp != stamp:
                cached = _Cached(stamp, self._read(path))
                self._cache[collection_id] = cached
            return cached.index

    def vectors(self, collection_id: str, ids: list[int]) -> dict[int, np.ndarray]:
        """Stored vectors for those ids that are in the index (to reuse them instead of re-embedding)."""
        index = self._current(collection_id)
        if index is None or not ids:
            return {}
        out = {}
        for i in ids:
            try:
                out[i] = index.reconstruct(int(i))
            except RuntimeError:  # not in the index (an orphaned row): embed it again
                continue
        return out

    def size(self, collection_id: str) -> int:
        index = self._current(collection_id)
        return 0 if index is None else int(index.ntotal)

    def search(self, collection_id: str, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-``k`` (chunk id, cosine score) pairs, best first."""
        index = self._current(collection_id)
        if index is None or index.ntotal == 0:
            return []
        scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]

    def check(self) -> None:
        """Raise if the index folder is unusable (used by /ready)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise RagsvcError(f"The index folder {self.root} is not writable.")
