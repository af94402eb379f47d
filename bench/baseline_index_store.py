"""Baseline for bench/index_growth.py: ragsvc/index_store.py as it was before segments (commit f0f5c0c), unchanged below.

FAISS indexes, one folder per collection, vectors keyed by ``Chunk.id``.

Writers (ingestion workers, deletes) take an exclusive file lock, load the newest index from disk,
change it, write a temporary file and ``os.replace`` it in: readers never see a half-written index.
Readers (the API) keep the index in memory and reload it when the file on disk changed, so new
documents become searchable without a restart.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from ragsvc.errors import RagsvcError

log = logging.getLogger(__name__)
INDEX_FILE = "index.faiss"


@dataclass
class _Cached:
    stamp: tuple[int, int, int]
    index: faiss.Index
    gpu: object = None


def ivf_nlist(n: int) -> int:
    """Inverted lists for an IVF index over ``n`` vectors (FAISS's rule of thumb, 4·√n)."""
    return max(16, int(4 * np.sqrt(n)))


def ivf_outgrown(nlist: int, n: int) -> bool:
    """True when an IVF index with ``nlist`` lists holds twice the vectors it was trained for.

    With the lists fixed, each list grows with the collection and a search at the same ``nprobe`` scans
    proportionally more vectors: at 1M vectors, lists trained at 100k made p99 search 3x slower than
    lists trained at 1M (docs/benchmarks.md, "Retrieval at scale"). Retraining at every doubling keeps
    the lists within √2 of the rule while costing, summed over a collection's life, about one more
    training at its final size.
    """
    return n >= 2 * (nlist / 4) ** 2


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


class IndexStore:
    """Inner-product search over normalised vectors (scores are cosine similarities).

    ``kind="flat"`` (default) is exact. ``kind="ivf"`` keeps a collection exact until it holds
    ``ivf_min_vectors``, then trains an inverted-file index (nlist ≈ 4·√n) on its vectors and
    searches ``nprobe`` lists: approximate, much faster on millions of vectors, and, unlike HNSW,
    it supports removing vectors in place, which deletes and new versions need. The lists are
    trained again, on all vectors, each time the collection doubles (:func:`ivf_outgrown`).
    """

    def __init__(self, root: Path, dim: int, kind: str = "flat", ivf_min_vectors: int = 100_000,
                 nprobe: int = 16, use_gpu: bool = False) -> None:
        self.root = Path(root)
        self.dim = dim
        self.kind = kind
        self.ivf_min_vectors = ivf_min_vectors
        self.nprobe = nprobe
        self.use_gpu = use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
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
        if self.dim and index.d != self.dim:  # dim 0: a reader that takes any (``ragsvc index check``)
            raise RagsvcError(
                f"The index at {path} holds {index.d}-dimensional vectors but the embedding model makes "
                f"{self.dim}; re-ingest the collection after changing the embedding model."
            )
        return index

    def _write(self, folder: Path, index: faiss.Index) -> None:
        tmp = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
        try:
            faiss.write_index(index, str(tmp))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        except (OSError, RuntimeError) as exc:
            # A full disk or an unwritable folder: FAISS reports it as a RuntimeError. Remove the partial
            # file (it holds space) and say what happened; the served index was never touched.
            tmp.unlink(missing_ok=True)
            free = shutil.disk_usage(folder).free if folder.exists() else 0
            raise OSError(getattr(exc, "errno", None) or errno.EIO,
                          f"writing the index failed ({exc}; {free} bytes free)", str(folder)) from exc
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
            size, sample = index.ntotal, self._training_sample(index) if self._needs_training(index) else None
        if sample is not None:
            try:
                self._retrain(collection_id, sample, size)
            except Exception:  # noqa: BLE001 - the vectors are stored and searchable; the next add retries
                log.exception("training the IVF index of collection %s failed; it stays as it is", collection_id)

    def _needs_training(self, index: faiss.Index) -> bool:
        return self.kind == "ivf" and index.ntotal >= self.ivf_min_vectors and (
            not _is_ivf(index) or ivf_outgrown(faiss.extract_index_ivf(index).nlist, index.ntotal))

    def _training_sample(self, index: faiss.Index) -> np.ndarray:
        """Up to 256 vectors per list of the index to train (FAISS warns below 39), sampled at random."""
        _, vectors = _all_vectors(index)
        n = len(vectors)
        return vectors[np.random.default_rng(0).permutation(n)[: min(n, ivf_nlist(n) * 256)]]

    def _retrain(self, collection_id: str, sample: np.ndarray, size: int) -> None:
        """Train IVF lists for the collection's size, then move its vectors over (flat or outgrown IVF).

        k-means is the slow part (about a minute at 1M vectors on 2 cores), so it runs outside the write
        lock: other writers and deletes on this collection go on meanwhile, and searches use the index
        as it is. Then, under the lock, the vectors the index holds *now* (those added or deleted during
        training included) go into the trained index in one add, which is quick, and it replaces the
        old one. One training per collection at a time (a second writer skips it); if the collection no
        longer needs it when training ends (retrained or shrunk meanwhile), the result is dropped.
        """
        folder = self._dir(collection_id)
        with open(folder / ".train.lock", "w") as busy:
            try:
                fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another writer (thread or worker process) is training this collection already
            try:
                self._train_and_swap(collection_id, sample, size)
            finally:
                fcntl.flock(busy, fcntl.LOCK_UN)

    def _train_and_swap(self, collection_id: str, sample: np.ndarray, size: int) -> None:
        t0 = time.perf_counter()
        nlist = ivf_nlist(size)  # lists follow the collection's size, not the sample's
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(sample)
        trained_s = time.perf_counter() - t0
        with self._write_lock(collection_id) as folder:
            path = folder / INDEX_FILE
            if not path.exists():
                return  # the collection was dropped meanwhile
            index = self._read(path)
            if not self._needs_training(index):
                return  # another writer retrained it meanwhile
            old = faiss.extract_index_ivf(index).nlist if _is_ivf(index) else "exact"
            ids, vectors = _all_vectors(index)
            # No direct map: with one, FAISS refuses remove_ids through the id map, and deletes matter
            # more than reuse. So a new version of a document in an IVF collection is embedded in full.
            # IVF stores ids itself; an IndexIDMap around it breaks on remove_ids (IVF reorders its lists).
            ivf.add_with_ids(vectors, ids)
            self._write(folder, ivf)
        log.info("IVF index of collection %s trained: %d vectors, %d lists (was %s), trained on %d in %.1f s "
                 "outside the lock", collection_id, len(ids), nlist, old, len(sample), trained_s)

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
        entry = self._entry(collection_id)
        return None if entry is None else entry.index

    def _entry(self, collection_id: str) -> _Cached | None:
        path = self._dir(collection_id) / INDEX_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._cache_lock:
            cached = self._cache.get(collection_id)
            if cached is None or cached.stamp != stamp:
                index = self._read(path)
                if _is_ivf(index):
                    faiss.extract_index_ivf(index).nprobe = self.nprobe
                cached = _Cached(stamp, index, self._gpu_copy(index))
                self._cache[collection_id] = cached
            return cached

    def _gpu_copy(self, index: faiss.Index):
        """A GPU replica for searching, when faiss-gpu sees a GPU (never written back to disk)."""
        if not self.use_gpu:
            return None
        try:
            return faiss.index_cpu_to_all_gpus(index)
        except Exception:  # noqa: BLE001 - the CPU index still answers
            log.warning("could not copy the index to the GPU; searching on the CPU", exc_info=True)
            return None

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

    def stored_ids(self, collection_id: str) -> np.ndarray:
        """Every id the collection's index file holds now, read from disk (not the cached copy)."""
        path = self._dir(collection_id) / INDEX_FILE
        try:
            index = self._read(path)
        except RagsvcError:
            if not path.exists():  # no index yet, or the collection was dropped meanwhile
                return np.zeros(0, dtype=np.int64)
            raise
        return _all_ids(index)

    def collections_on_disk(self) -> list[str]:
        """Names of the folders that hold a collection's FAISS index."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / INDEX_FILE).exists())

    def size(self, collection_id: str) -> int:
        index = self._current(collection_id)
        return 0 if index is None else int(index.ntotal)

    def search(self, collection_id: str, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-``k`` (chunk id, cosine score) pairs, best first."""
        entry = self._entry(collection_id)
        if entry is None or entry.index.ntotal == 0:
            return []
        searcher = entry.gpu or entry.index
        # One query, one OpenMP thread. FAISS's default team (one thread per core) makes a single query
        # wait for its slowest thread; on two cores shared with the engine and the worker, exact search
        # over 200k vectors was 3-4x slower with two threads than with one, and every approximate index
        # showed 4-9 ms p99 stalls against sub-millisecond p50s (docs/benchmarks.md, "Retrieval at
        # scale"). The setting is per calling thread in OpenMP, so training and batches keep every core.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, ids = searcher.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
        finally:
            faiss.omp_set_num_threads(threads)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]

    def check(self) -> None:
        """Raise if the index folder is unusable (used by /ready)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise RagsvcError(f"The index folder {self.root} is not writable.")


def _all_ids(index: faiss.Index) -> np.ndarray:
    """The ids in an ``IndexIDMap2(IndexFlatIP)`` or an ``IndexIVFFlat``, without copying vectors."""
    if not _is_ivf(index):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    ids = [faiss.rev_swig_ptr(ivf.invlists.get_ids(no), size).copy()
           for no in range(ivf.nlist) if (size := ivf.invlists.list_size(no))]
    return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)


def _all_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of every vector in an ``IndexIDMap2(IndexFlatIP)`` or an ``IndexIVFFlat``."""
    if not _is_ivf(index):
        return faiss.vector_to_array(index.id_map).astype(np.int64), index.index.reconstruct_n(0, index.ntotal)
    # IVF keeps no id -> position map (deletes need it absent), so read its lists directly; an
    # IVFFlat code is the float32 vector itself.
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    ids, vecs = [], []
    for no in range(ivf.nlist):
        size = lists.list_size(no)
        if size:
            ids.append(faiss.rev_swig_ptr(lists.get_ids(no), size).copy())
            codes = faiss.rev_swig_ptr(lists.get_codes(no), size * lists.code_size).copy()
            vecs.append(codes.view(np.float32).reshape(size, ivf.d))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, ivf.d), dtype=np.float32)
    return np.concatenate(ids).astype(np.int64), np.concatenate(vecs)


def make_index_store(settings, dim: int) -> IndexStore:
    """The index store as the settings describe it (``settings``: :class:`ragsvc.settings.Settings`)."""
    return IndexStore(settings.index_dir, dim, kind=settings.index_kind, ivf_min_vectors=settings.ivf_min_vectors,
                      nprobe=settings.ivf_nprobe, use_gpu=settings.faiss_gpu)
