"""FAISS indexes as immutable segments, one folder per collection, vectors keyed by ``Chunk.id``.

Every change costs what the change costs (issue 13, item 1), the shape Lucene and Milvus use:

- an add writes one new **segment**: a small FAISS file over just the added vectors, written aside,
  fsynced and renamed to ``seg-<random id>.faiss``, so it is never seen half-written;
- a delete writes a **tombstone**: the deleted ids, one line in the manifest;
- the **manifest** (``manifest.log``) is an append-only log of those two kinds of line, each with a
  sequence number. A tombstone hides its ids in the segments added *before* it (a retried job's
  re-added ids live on in the newer segment). A line counts only once its newline is on disk, so a
  writer killed mid-append leaves a torn line that every reader ignores; a segment file that no
  manifest line names is garbage, swept later (:meth:`IndexStore.sweep`).
- **compaction** (:meth:`IndexStore.compact`) merges segments of the same size tier, applies their
  tombstones and trains IVF lists when the merged segment is big enough; it runs in the worker between
  jobs, never on an upload's or a delete's path, one at a time per collection (a file lock), and swaps
  its result in by renaming a rewritten manifest over the old one.

Readers (the API) keep each collection's loaded segments and tombstones in an immutable snapshot. Each
search costs a ``stat`` of the manifest; when it grew, the reader reads only the appended bytes and the
new segment files; when it was replaced (a compaction or a rebuild), only the segments it does not hold
yet. Loading takes a per-collection lock, and searches meanwhile use the previous snapshot: no search
and no other collection waits on it.

The database is the source of truth for the vectors (``chunks.embedding``): ``ragsvc index rebuild``
recreates a collection's segments from it without embedding anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from ragsvc.errors import RagsvcError

log = logging.getLogger(__name__)
MANIFEST = "manifest.log"
LEGACY_FILE = "index.faiss"  # the one-file index of releases before segments, adopted on first use
MERGE_FACTOR = 4  # segments of one size tier merged together: each vector is rewritten ~log4(n/200) times
TIER_BASE = 256  # vectors: segments below this are all tier 0
TOMBSTONE_SHARE = 0.10  # a segment whose dead vectors pass this share is rewritten without them
GARBAGE_AGE_S = 600.0  # an unreferenced segment file younger than this may belong to a running write
FORGET_EVERY_S = 30.0  # how often a reader looks for collections another process dropped
# Small exact segments (new documents, before compaction merges them) are searched as one in-memory
# index. Each FAISS call and its merge cost Python time that a 200-vector segment does not repay: with
# one IVF segment and four document segments at 100k, p50 search was ~8% slower than one file. The
# tail is rebuilt from the small segments' live vectors when they change, so it is capped: a copy of
# at most TAIL_MAX_VECTORS (6 MB at 384-d) per refresh, and segments past the cap are searched alone.
TAIL_SEGMENT_MAX = TIER_BASE * MERGE_FACTOR  # vectors: segments of tiers 0 and 1
TAIL_MAX_VECTORS = 4 * TAIL_SEGMENT_MAX


def ivf_nlist(n: int) -> int:
    """Inverted lists for an IVF index over ``n`` vectors (FAISS's rule of thumb, 4·√n)."""
    return max(16, int(4 * np.sqrt(n)))


def ivf_outgrown(nlist: int, n: int) -> bool:
    """True when an IVF index with ``nlist`` lists holds twice the vectors it was trained for.

    With the lists fixed, each list grows with the collection and a search at the same ``nprobe`` scans
    proportionally more vectors: at 1M vectors, lists trained at 100k made p99 search 3x slower than
    lists trained at 1M (docs/benchmarks.md, "Retrieval at scale"). A merged segment is trained afresh
    at its own size, so a segment's lists always fit it.
    """
    return n >= 2 * (nlist / 4) ** 2


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def _tier(n: int) -> int:
    return 0 if n < TIER_BASE else int(np.log(n / TIER_BASE) / np.log(MERGE_FACTOR)) + 1


@dataclass(frozen=True)
class SegmentInfo:
    seq: int
    name: str
    vectors: int
    bytes: int
    kind: str


@dataclass
class _Segment:
    info: SegmentInfo
    index: faiss.Index
    ids: np.ndarray  # sorted, for membership tests of tombstones in O(log n)
    dead: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # tombstoned ids it holds
    params: object = None  # FAISS search parameters that skip ``dead``

    def with_dead(self, dead: np.ndarray, nprobe: int) -> "_Segment":
        seg = _Segment(self.info, self.index, self.ids, dead)
        if len(dead):
            batch = faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead))
            sel = faiss.IDSelectorNot(batch)
            seg._keep = (batch, sel)  # FAISS's Python layer does not keep the inner selector alive
            seg.params = (faiss.SearchParametersIVF(sel=sel, nprobe=nprobe) if _is_ivf(self.index)
                          else faiss.SearchParameters(sel=sel))
        return seg


@dataclass
class _Manifest:
    """A collection's manifest as read: live segments, tombstones (id → sequence), next sequence."""
    ident: tuple[int, int] = (0, 0)  # (inode, device) of the file read
    offset: int = 0  # bytes consumed (complete lines only)
    next_seq: int = 1
    segments: dict[str, SegmentInfo] = field(default_factory=dict)
    tombstones: dict[int, int] = field(default_factory=dict)

    def apply(self, line: dict) -> None:
        op = line["op"]
        if op == "base":
            self.next_seq = max(self.next_seq, line["next"])
        elif op == "add":
            info = SegmentInfo(line["seq"], line["seg"], line["n"], line["bytes"], line["kind"])
            self.segments[info.name] = info
            self.next_seq = max(self.next_seq, info.seq + 1)
        elif op == "del":
            for i in line["ids"]:
                self.tombstones[int(i)] = max(self.tombstones.get(int(i), 0), line["seq"])
            self.next_seq = max(self.next_seq, line["seq"] + 1)


@dataclass(frozen=True)
class _Snapshot:
    manifest_ident: tuple[int, int]
    manifest_offset: int
    segments: tuple[_Segment, ...]
    tombstones: dict[int, int]
    # What a search runs over: the segments not in the tail, then the tail (the small exact segments'
    # live vectors in one flat index). Same results as searching ``segments`` one by one.
    searched: tuple[_Segment, ...] = ()
    tail: "_Segment | None" = None
    tail_key: tuple = ()  # (name, dead count) of each segment in the tail, to reuse it while unchanged

    @property
    def live(self) -> int:
        return sum(len(s.ids) - len(s.dead) for s in self.segments)


def _read_lines(path: Path, state: _Manifest) -> _Manifest:
    """Apply the complete lines of ``path`` after ``state.offset`` (from 0 if the file is another one)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            ident = (st.st_ino, st.st_dev)
            if ident != state.ident:
                state = _Manifest(ident)
            fh.seek(state.offset)
            data = fh.read()
    except FileNotFoundError:
        return _Manifest()
    end = data.rfind(b"\n") + 1  # a torn last line (a writer killed mid-append) is not a line yet
    for raw in data[:end].splitlines():
        if raw.strip():
            state.apply(json.loads(raw))
    state.offset += end
    return state


class IndexStore:
    """Inner-product search over normalised vectors (scores are cosine similarities), in segments.

    ``kind="flat"`` (default) keeps every segment exact. ``kind="ivf"`` (or ``"ivf_sq8"``, 8-bit
    scalar-quantised codes: 3.9x less memory) makes a segment that compaction merges to at least
    ``ivf_min_vectors`` an inverted-file index (nlist ≈ 4·√n, trained on it) searched over ``nprobe``
    lists. New documents always land in small exact segments.
    """

    def __init__(self, root: Path, dim: int, kind: str = "flat", ivf_min_vectors: int = 100_000,
                 nprobe: int = 16, use_gpu: bool = False) -> None:
        self.root = Path(root)
        self.dim = dim
        self.kind = kind
        self.ivf_min_vectors = ivf_min_vectors
        self.nprobe = nprobe
        # Segments search on the CPU: a GPU copy per segment, kept in step with tombstones, is not built
        # yet (``RAGSVC_FAISS_GPU`` is accepted and has no effect on the segmented store).
        self.use_gpu = False
        self.root.mkdir(parents=True, exist_ok=True)
        self._snapshots: dict[str, _Snapshot] = {}
        self._manifests: dict[str, _Manifest] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()  # guards the dict of locks only, never held while loading
        self.bytes_written = 0  # segment and manifest bytes this store wrote (benchmarks, tests)
        self.bytes_read = 0  # segment and manifest bytes this store read
        self._forgotten_at = time.monotonic()

    # --- files ---------------------------------------------------------------------------------
    def _dir(self, collection_id: str) -> Path:
        return self.root / collection_id

    def _lock_for(self, collection_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(collection_id, threading.Lock())

    @contextmanager
    def _file_lock(self, collection_id: str, name: str = ".lock", blocking: bool = True) -> Iterator[bool]:
        folder = self._dir(collection_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / name, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self, path: Path) -> faiss.Index:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:  # FAISS reports I/O and format errors as RuntimeError
            if not path.exists():
                raise FileNotFoundError(str(path)) from exc
            raise RagsvcError(f"The index file {path} cannot be read: {exc}") from exc
        self.bytes_read += path.stat().st_size
        if self.dim and index.d != self.dim:  # dim 0: a reader that takes any (``ragsvc index check``)
            raise RagsvcError(
                f"The index at {path} holds {index.d}-dimensional vectors but the embedding model makes "
                f"{self.dim}; re-ingest the collection after changing the embedding model."
            )
        return index

    def _write_aside(self, folder: Path, name: str, write) -> int:
        """Write a file under a temporary name, fsync it, rename it to ``name``; returns its size."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            write(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            size = tmp.stat().st_size
            os.replace(tmp, folder / name)
        except (OSError, RuntimeError) as exc:
            # A full disk or an unwritable folder: FAISS reports it as a RuntimeError. Remove the partial
            # file (it holds space) and say what happened; the served segments were never touched.
            tmp.unlink(missing_ok=True)
            free = shutil.disk_usage(folder).free if folder.exists() else 0
            raise OSError(getattr(exc, "errno", None) or errno.EIO,
                          f"writing the index failed ({exc}; {free} bytes free)", str(folder)) from exc
        self._fsync_dir(folder)
        self.bytes_written += size
        return size

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_segment(self, folder: Path, index: faiss.Index, kind: str) -> tuple[str, int]:
        name = f"seg-{uuid.uuid4().hex}.faiss"
        return name, self._write_aside(folder, name, lambda p: faiss.write_index(index, str(p)))

    def _append(self, folder: Path, lines: list[dict]) -> None:
        """Append manifest lines in one write and fsync them (caller holds the collection's lock)."""
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        path = folder / MANIFEST
        new = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A writer killed mid-append left a torn line, which readers ignore; appending after it
                # would glue it to this line, so cut it off first (readers never consumed it).
                tail = os.pread(fd, size, 0)
                os.ftruncate(fd, tail.rfind(b"\n") + 1)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            self._fsync_dir(folder)
        self.bytes_written += len(data)

    def _manifest(self, collection_id: str) -> _Manifest:
        """The manifest as on disk now, reading only what was appended since the last read."""
        folder = self._dir(collection_id)
        self._adopt_legacy(folder)
        before = self._manifests.get(collection_id, _Manifest())
        state = _read_lines(folder / MANIFEST, _copy(before))
        self.bytes_read += state.offset - (before.offset if state.ident == before.ident else 0)
        self._manifests[collection_id] = state
        return _copy(state)

    def _adopt_legacy(self, folder: Path) -> None:
        """A collection indexed before segments: its one file becomes its first segment (renamed, not copied)."""
        legacy = folder / LEGACY_FILE
        if not legacy.exists() or (folder / MANIFEST).exists():
            return
        with self._file_lock(folder.name):
            if not legacy.exists() or (folder / MANIFEST).exists():
                return
            index = faiss.read_index(str(legacy))
            name = f"seg-{uuid.uuid4().hex}.faiss"
            os.replace(legacy, folder / name)
            kind = "ivf" if _is_ivf(index) else "flat"
            self._append(folder, [{"op": "base", "next": 2},
                                  {"op": "add", "seq": 1, "seg": name, "n": int(index.ntotal),
                                   "bytes": (folder / name).stat().st_size, "kind": kind}])
            log.info("adopted %s as the first segment of %s", legacy, folder.name)

    # --- writes --------------------------------------------------------------------------------
    def _new_flat(self, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim or vectors.shape[1]))
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        return index

    def add(self, collection_id: str, ids: list[int], vectors: np.ndarray, fresh: bool = False) -> None:
        """One new segment with these vectors; ids already live are tombstoned first (their older copies
        stop counting). ``fresh``: the caller knows no id is live (new chunk rows: ids are never reused),
        so the write loads none of the collection's segments."""
        if not len(ids):
            return
        id_arr = np.asarray(ids, dtype=np.int64)
        folder = self._dir(collection_id)
        name, size = self._write_segment(folder, self._new_flat(id_arr, vectors), "flat")
        with self._file_lock(collection_id):
            state = self._manifest(collection_id)
            live = np.zeros(0, dtype=np.int64) if fresh else self._live_ids_of(collection_id, state, id_arr)
            lines = []
            if len(live):
                lines.append({"op": "del", "seq": state.next_seq, "ids": live.tolist()})
                state.next_seq += 1
            lines.append({"op": "add", "seq": state.next_seq, "seg": name, "n": len(id_arr), "bytes": size,
                          "kind": "flat"})
            self._append(folder, lines)

    def _live_ids_of(self, collection_id: str, state: _Manifest, ids: np.ndarray) -> np.ndarray:
        snap = self._refresh(collection_id, state)
        hit = [ids[_member(seg.ids, ids) & ~_dead_mask(seg, ids)] for seg in snap.segments]
        return np.unique(np.concatenate(hit)) if hit else np.zeros(0, dtype=np.int64)

    def remove(self, collection_id: str, ids: list[int], count: bool = True) -> int:
        """Tombstone the ids that are live; returns how many were. One manifest line, no segment rewritten.
        ``count=False``: tombstone them all without loading the segments to count (returns 0); a
        tombstone of an id that no segment holds hides nothing and the next compaction drops it."""
        if not len(ids) or not (self._dir(collection_id) / MANIFEST).exists() and not (
                self._dir(collection_id) / LEGACY_FILE).exists():
            return 0
        id_arr = np.unique(np.asarray(ids, dtype=np.int64))
        with self._file_lock(collection_id):
            state = self._manifest(collection_id)
            live = self._live_ids_of(collection_id, state, id_arr) if count else id_arr
            if len(live):
                self._append(self._dir(collection_id), [{"op": "del", "seq": state.next_seq, "ids": live.tolist()}])
        return len(live) if count else 0

    def drop(self, collection_id: str) -> None:
        shutil.rmtree(self._dir(collection_id), ignore_errors=True)
        self._snapshots.pop(collection_id, None)
        self._manifests.pop(collection_id, None)

    # --- reads ---------------------------------------------------------------------------------
    def _refresh(self, collection_id: str, state: _Manifest | None = None, wait: bool = True) -> _Snapshot:
        """The collection's snapshot, brought up to the manifest on disk (loading only new segments)."""
        lock = self._lock_for(collection_id)
        current = self._snapshots.get(collection_id)
        if not lock.acquire(blocking=wait or current is None):
            return current  # another thread loads; this search uses the previous snapshot
        try:
            for _ in range(3):
                if state is None:
                    state = self._manifest(collection_id)
                try:
                    return self._build(collection_id, state)
                except FileNotFoundError:  # a compaction replaced a segment after the manifest was read
                    state = None
            raise RagsvcError(f"The segments of collection {collection_id} kept changing while being loaded.")
        finally:
            lock.release()

    def _build(self, collection_id: str, state: _Manifest) -> _Snapshot:
        current = self._snapshots.get(collection_id)
        if current is not None and (current.manifest_ident, current.manifest_offset) == (state.ident, state.offset):
            return current
        old = {s.info.name: s for s in current.segments} if current else {}
        folder = self._dir(collection_id)
        segments = []
        for info in sorted(state.segments.values(), key=lambda i: i.seq):
            seg = old.get(info.name)
            if seg is None:
                index = self._read_index(folder / info.name)
                if _is_ivf(index):
                    faiss.extract_index_ivf(index).nprobe = self.nprobe
                seg = _Segment(info, index, np.sort(_all_ids(index)))
            tomb = state.tombstones
            if tomb:
                t_ids = np.fromiter(tomb.keys(), dtype=np.int64, count=len(tomb))
                t_seq = np.fromiter(tomb.values(), dtype=np.int64, count=len(tomb))
                dead = t_ids[_member(seg.ids, t_ids) & (t_seq > info.seq)]
            else:
                dead = np.zeros(0, dtype=np.int64)
            if seg.params is None and not len(dead) and not len(seg.dead):
                segments.append(seg)
            elif len(dead) == len(seg.dead) and np.array_equal(np.sort(dead), np.sort(seg.dead)):
                segments.append(seg)
            else:
                segments.append(seg.with_dead(np.sort(dead), self.nprobe))
        searched, tail, tail_key = self._tail(segments, current)
        snap = _Snapshot(state.ident, state.offset, tuple(segments), dict(state.tombstones), searched, tail, tail_key)
        self._snapshots[collection_id] = snap
        return snap

    def _tail(self, segments: list[_Segment], current: _Snapshot | None
              ) -> tuple[tuple[_Segment, ...], _Segment | None, tuple]:
        """The segments to search, with the small exact ones folded into one flat index, the tail (see
        TAIL_MAX_VECTORS); returns (searched, tail, tail key)."""
        small, room = [], TAIL_MAX_VECTORS
        for seg in segments:  # oldest first: those are the next to be merged away by compaction
            if not _is_ivf(seg.index) and len(seg.ids) <= TAIL_SEGMENT_MAX and len(seg.ids) <= room:
                small.append(seg)
                room -= len(seg.ids)
        if len(small) < 2:
            return tuple(s for s in segments if len(s.ids) > len(s.dead)), None, ()
        key = tuple((s.info.name, len(s.dead)) for s in small)
        folded = {s.info.name for s in small}
        rest = tuple(s for s in segments if s.info.name not in folded and len(s.ids) > len(s.dead))
        if current is not None and current.tail_key == key:
            tail = current.tail
        else:
            parts = [_live_vectors(s) for s in small]
            ids = np.concatenate([p[0] for p in parts])
            tail = None if not len(ids) else _Segment(
                SegmentInfo(0, "(tail)", len(ids), 0, "flat"),
                self._new_flat(ids, np.concatenate([p[1] for p in parts])), np.sort(ids))
        return rest + ((tail,) if tail is not None else ()), tail, key

    def _forget_dropped(self) -> None:
        """Free the snapshots of collections whose folder is gone: dropped through another process (an
        API replica, a CLI), they are never searched here again, so nothing else would release them."""
        self._forgotten_at = time.monotonic()
        for collection_id in list(self._snapshots):
            folder = self._dir(collection_id)
            if not (folder / MANIFEST).exists() and not (folder / LEGACY_FILE).exists():
                self._snapshots.pop(collection_id, None)
                self._manifests.pop(collection_id, None)

    def _snapshot(self, collection_id: str) -> _Snapshot | None:
        if time.monotonic() - self._forgotten_at > FORGET_EVERY_S:
            self._forget_dropped()
        folder = self._dir(collection_id)
        try:
            st = os.stat(folder / MANIFEST)
        except FileNotFoundError:
            if not (folder / LEGACY_FILE).exists():
                self._snapshots.pop(collection_id, None)
                return None
            return self._refresh(collection_id, wait=False)
        current = self._snapshots.get(collection_id)
        # Nothing appended and nothing renamed over the manifest: the snapshot is current, and a search
        # costs this one stat (reading the manifest copies the tombstone map, which grows until the
        # next compaction). A torn last line keeps size > offset and so takes the full path, which is
        # correct, only slower, until the next writer cuts it.
        if current is not None and current.manifest_ident == (st.st_ino, st.st_dev) \
                and current.manifest_offset == st.st_size:
            return current
        return self._refresh(collection_id, wait=False)

    def search(self, collection_id: str, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-``k`` (chunk id, cosine score) pairs, best first, over every live segment."""
        snap = self._snapshot(collection_id)
        if snap is None or not snap.segments:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        # One query, one OpenMP thread. FAISS's default team (one thread per core) makes a single query
        # wait for its slowest thread; on two cores shared with the engine and the worker, exact search
        # over 200k vectors was 3-4x slower with two threads than with one, and every approximate index
        # showed 4-9 ms p99 stalls against sub-millisecond p50s (docs/benchmarks.md, "Retrieval at
        # scale"). The setting is per calling thread in OpenMP, so training and batches keep every core.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        hits: list[tuple[float, int]] = []
        try:
            for seg in snap.searched:
                scores, ids = seg.index.search(q, k, params=seg.params) if seg.params else seg.index.search(q, k)
                hits.extend((float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i != -1)
        finally:
            faiss.omp_set_num_threads(threads)
        hits.sort(key=lambda h: -h[0])
        return [(i, s) for s, i in hits[:k]]

    def vectors(self, collection_id: str, ids: list[int]) -> dict[int, np.ndarray]:
        """Stored vectors of those ids that exact segments hold (IVF segments keep no id map)."""
        snap = self._snapshot(collection_id)
        if snap is None or not ids:
            return {}
        want = np.asarray(ids, dtype=np.int64)
        out = {}
        for seg in snap.segments:
            if _is_ivf(seg.index):
                continue
            for i in want[_member(seg.ids, want) & ~_dead_mask(seg, want)]:
                out[int(i)] = seg.index.reconstruct(int(i))
        return out

    def all_vectors(self, collection_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every live vector (SQ8 segments give their decoded approximations)."""
        snap = self._snapshot(collection_id)
        parts = [_live_vectors(seg) for seg in (snap.segments if snap else ())]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def stored_ids(self, collection_id: str) -> np.ndarray:
        """Every live id of the collection, from the manifest on disk now."""
        if not (self._dir(collection_id) / MANIFEST).exists() and not (self._dir(collection_id) / LEGACY_FILE).exists():
            return np.zeros(0, dtype=np.int64)
        snap = self._refresh(collection_id)
        live = [np.setdiff1d(seg.ids, seg.dead, assume_unique=True) for seg in snap.segments]
        return np.concatenate(live) if live else np.zeros(0, dtype=np.int64)

    def segments(self, collection_id: str) -> list[SegmentInfo]:
        """The live segments, oldest first (``ragsvc index check``, tests, benchmarks)."""
        snap = self._snapshot(collection_id)
        return [seg.info for seg in snap.segments] if snap else []

    def collections_on_disk(self) -> list[str]:
        """Names of the folders that hold a collection's segments."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if (p / MANIFEST).exists() or (p / LEGACY_FILE).exists())

    def size(self, collection_id: str) -> int:
        snap = self._snapshot(collection_id)
        return 0 if snap is None else snap.live

    def memory_bytes(self, collection_id: str) -> int:
        """Bytes this process holds for searching the collection: codes, ids and the sorted id copy."""
        snap = self._snapshot(collection_id)
        if snap is None:
            return 0
        total = 0
        for seg in snap.segments:
            per = (seg.index.sa_code_size() if _is_ivf(seg.index) else 4 * seg.index.d) + 8  # code + stored id
            total += len(seg.ids) * (per + 8) + seg.dead.nbytes  # + the sorted id copy
            if _is_ivf(seg.index):
                total += faiss.extract_index_ivf(seg.index).nlist * seg.index.d * 4  # the centroids
        if snap.tail is not None:  # the small segments' vectors again, searched as one (bounded)
            total += len(snap.tail.ids) * (4 * snap.tail.index.d + 16)
        return total

    def check(self) -> None:
        """Raise if the index folder is unusable (used by /ready)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise RagsvcError(f"The index folder {self.root} is not writable.")

    # --- maintenance ---------------------------------------------------------------------------
    def garbage(self, collection_id: str, min_age_s: float = GARBAGE_AGE_S) -> list[Path]:
        """Segment and temporary files that no manifest line names, older than ``min_age_s`` (a younger one
        may be a write in progress: its manifest line comes after the file)."""
        folder = self._dir(collection_id)
        if not folder.exists():
            return []
        named = set(self._manifest(collection_id).segments)
        now = time.time()
        out = []
        for p in folder.iterdir():
            if (p.name.startswith("seg-") or p.name.endswith(".tmp")) and p.name not in named:
                try:
                    if now - p.stat().st_mtime >= min_age_s:
                        out.append(p)
                except FileNotFoundError:
                    continue
        return sorted(out)

    def sweep(self, collection_id: str, min_age_s: float = GARBAGE_AGE_S) -> int:
        """Delete the collection's garbage files; returns how many."""
        with self._file_lock(collection_id):
            files = self.garbage(collection_id, min_age_s)
            for p in files:
                p.unlink(missing_ok=True)
        return len(files)

    def plan(self, collection_id: str) -> list[SegmentInfo]:
        """The segments a compaction would merge now (empty: nothing to do).

        Segments are grouped in size tiers (×``MERGE_FACTOR`` each); a tier holding ``MERGE_FACTOR``
        segments is merged into one of the next tier, so a vector is rewritten about once per tier. A
        segment whose tombstoned share passes ``TOMBSTONE_SHARE`` is rewritten on its own.
        """
        snap = self._snapshot(collection_id)
        if snap is None:
            return []
        tiers: dict[int, list[_Segment]] = {}
        for seg in snap.segments:
            tiers.setdefault(_tier(len(seg.ids) - len(seg.dead)), []).append(seg)
        for tier in sorted(tiers):  # a merge applies its segments' tombstones too
            if len(tiers[tier]) >= MERGE_FACTOR:
                return [seg.info for seg in tiers[tier]]
        for seg in snap.segments:
            if len(seg.dead) > TOMBSTONE_SHARE * len(seg.ids):
                return [seg.info]
        return []

    def compact(self, collection_id: str, merge: list[str] | None = None) -> dict | None:
        """Merge the planned segments (or the named ones) into one; None when there was nothing to do or
        another compaction of this collection runs. Safe against a kill at any point: the new segment is
        garbage until the manifest that names it is renamed into place, and then the old ones are."""
        with self._file_lock(collection_id, ".compact.lock", blocking=False) as mine:
            if not mine:
                return None
            t0 = time.perf_counter()
            names = merge if merge is not None else [i.name for i in self.plan(collection_id)]
            snap = self._refresh(collection_id)
            chosen = [s for s in snap.segments if s.info.name in set(names)]
            if not chosen:
                return None
            parts = [_live_vectors(s) for s in chosen]
            ids = np.concatenate([p[0] for p in parts])
            vecs = np.concatenate([p[1] for p in parts])
            seq = max(s.info.seq for s in chosen)  # tombstones after every merged segment still apply
            index, kind = self._merged_index(ids, vecs)
            folder = self._dir(collection_id)
            new_name = new_bytes = None
            if len(ids):
                new_name, new_bytes = self._write_segment(folder, index, kind)
            with self._file_lock(collection_id):
                state = self._manifest(collection_id)
                if any(s.info.name not in state.segments for s in chosen):  # a rebuild replaced them meanwhile
                    if new_name:
                        (folder / new_name).unlink(missing_ok=True)
                    return None
                for s in chosen:
                    del state.segments[s.info.name]
                # Keep only the tombstones that still hide something: an id that a remaining segment
                # older than the tombstone holds (those this merge applied, and those of ids no segment
                # ever held, go).
                if state.tombstones:
                    t_ids = np.fromiter(state.tombstones.keys(), dtype=np.int64, count=len(state.tombstones))
                    t_seq = np.fromiter(state.tombstones.values(), dtype=np.int64, count=len(state.tombstones))
                    keep = _member(np.sort(ids), t_ids) & (seq < t_seq)
                    for o in snap.segments:
                        if o.info.name in state.segments:
                            keep |= _member(o.ids, t_ids) & (o.info.seq < t_seq)
                    state.tombstones = {int(i): int(q) for i, q in zip(t_ids[keep], t_seq[keep])}
                if new_name:
                    state.segments[new_name] = SegmentInfo(seq, new_name, len(ids), new_bytes, kind)
                self._rewrite(folder, state)
            for s in chosen:
                (folder / s.info.name).unlink(missing_ok=True)
        stats = {"merged": len(chosen), "vectors": int(len(ids)), "kind": kind, "bytes": new_bytes or 0,
                 "seconds": round(time.perf_counter() - t0, 3)}
        log.info("compacted collection %s: %s", collection_id, stats)
        return stats

    def compact_all(self) -> int:
        """Compact every collection that needs it (the worker, between jobs); returns compactions done."""
        done = 0
        for cid in self.collections_on_disk():
            try:
                while self.plan(cid) and self.compact(cid):
                    done += 1
            except Exception:  # noqa: BLE001 - the segments stay as they are and searchable; retried later
                log.exception("compacting the index of collection %s failed", cid)
        return done

    def sweep_all(self, min_age_s: float = GARBAGE_AGE_S) -> int:
        """Sweep every collection's garbage files (segments a killed writer or compaction left)."""
        return sum(self.sweep(cid, min_age_s) for cid in self.collections_on_disk())

    def _merged_index(self, ids: np.ndarray, vecs: np.ndarray) -> tuple[faiss.Index, str]:
        n = len(ids)
        if self.kind not in ("ivf", "ivf_sq8") or n < self.ivf_min_vectors:
            return self._new_flat(ids, vecs), "flat"
        nlist = ivf_nlist(n)
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivf_sq8":
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                faiss.METRIC_INNER_PRODUCT)
        else:
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vecs[np.random.default_rng(0).permutation(n)[: min(n, nlist * 256)]]
        ivf.train(np.ascontiguousarray(sample))
        # No direct map: with one, FAISS refuses remove_ids, and IVF reorders its lists; ids live in the lists.
        ivf.add_with_ids(np.ascontiguousarray(vecs), ids)
        return ivf, self.kind

    def _rewrite(self, folder: Path, state: _Manifest) -> None:
        """Replace the manifest by one holding the state's segments and the tombstones that still hide
        something in them (caller holds the collection's lock)."""
        segs = sorted(state.segments.values(), key=lambda i: i.seq)
        min_seq = min((s.seq for s in segs), default=state.next_seq)
        by_seq: dict[int, list[int]] = {}
        for i, s in state.tombstones.items():
            if s > min_seq:  # a tombstone not newer than every segment hides nothing
                by_seq.setdefault(s, []).append(i)
        lines = [{"op": "base", "next": state.next_seq}]
        lines += [{"op": "add", "seq": s.seq, "seg": s.name, "n": s.vectors, "bytes": s.bytes, "kind": s.kind}
                  for s in segs]
        lines += [{"op": "del", "seq": s, "ids": sorted(ids)} for s, ids in sorted(by_seq.items())]
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        self._write_aside(folder, MANIFEST, lambda p: p.write_bytes(data))

    def next_seq(self, collection_id: str) -> int:
        """The manifest's next sequence number: pass it to :meth:`rebuild`, taken before reading the rows."""
        return self._manifest(collection_id).next_seq

    def rebuild(self, collection_id: str, ids: np.ndarray, vectors: np.ndarray, since: int = 1 << 62) -> dict:
        """Replace the collection's segments by one built from these vectors (the database's ready rows).

        ``since``: :meth:`next_seq` taken before the rows were read. Segments and tombstones written
        from then on (documents made ready or deleted while the rebuild ran) are kept, on top of the new
        segment: it gets sequence 0, below them, so their tombstones hide its copies too, and an id
        that is in both is hidden in it by a tombstone at sequence 1.
        """
        t0 = time.perf_counter()
        folder = self._dir(collection_id)
        ids = np.asarray(ids, dtype=np.int64)
        index, kind = self._merged_index(ids, np.ascontiguousarray(vectors, dtype=np.float32))
        name, size = self._write_segment(folder, index, kind) if len(ids) else (None, 0)
        with self._file_lock(collection_id):
            state = self._manifest(collection_id)
            snap = self._refresh(collection_id, state)
            fresh = _Manifest(next_seq=max(state.next_seq, 2))
            kept = [s for s in snap.segments if s.info.seq >= since]
            for s in kept:
                fresh.segments[s.info.name] = s.info
            fresh.tombstones = {i: q for i, q in state.tombstones.items() if q >= since}
            if name:
                fresh.segments[name] = SegmentInfo(0, name, len(ids), size, kind)
                for s in kept:
                    for i in ids[_member(s.ids, ids)]:
                        fresh.tombstones.setdefault(int(i), 1)
            self._rewrite(folder, fresh)
        for s in snap.segments:
            if s.info.name not in fresh.segments:
                (folder / s.info.name).unlink(missing_ok=True)
        return {"vectors": int(len(ids)), "kind": kind, "bytes": size, "seconds": round(time.perf_counter() - t0, 3)}


def _copy(m: _Manifest) -> _Manifest:
    return _Manifest(m.ident, m.offset, m.next_seq, dict(m.segments), dict(m.tombstones))


def _member(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """For each of ``ids``, whether it is in ``sorted_ids`` (O(len(ids) · log n))."""
    if not len(sorted_ids) or not len(ids):
        return np.zeros(len(ids), dtype=bool)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


def _dead_mask(seg: _Segment, ids: np.ndarray) -> np.ndarray:
    return _member(seg.dead, ids)


def _live_vectors(seg: _Segment) -> tuple[np.ndarray, np.ndarray]:
    ids, vecs = _all_vectors(seg.index)
    keep = ~_member(seg.dead, ids)
    return ids[keep], vecs[keep]


def _all_ids(index: faiss.Index) -> np.ndarray:
    """The ids in an ``IndexIDMap2(IndexFlatIP)`` or an IVF index, without copying vectors."""
    if not _is_ivf(index):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    ids = [faiss.rev_swig_ptr(ivf.invlists.get_ids(no), size).copy()
           for no in range(ivf.nlist) if (size := ivf.invlists.list_size(no))]
    return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)


def _all_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of every vector in an ``IndexIDMap2(IndexFlatIP)`` or an IVF index."""
    if not _is_ivf(index):
        return faiss.vector_to_array(index.id_map).astype(np.int64), index.index.reconstruct_n(0, index.ntotal)
    # IVF keeps no id -> position map (deletes need it absent), so read its lists directly; an IVFFlat
    # code is the float32 vector itself, an SQ8 code is decoded (an approximation).
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    lists = ivf.invlists
    ids, vecs = [], []
    for no in range(ivf.nlist):
        size = lists.list_size(no)
        if size:
            ids.append(faiss.rev_swig_ptr(lists.get_ids(no), size).copy())
            codes = faiss.rev_swig_ptr(lists.get_codes(no), size * lists.code_size).copy()
            if isinstance(ivf, faiss.IndexIVFFlat):
                vecs.append(codes.view(np.float32).reshape(size, ivf.d))
            else:
                vecs.append(ivf.sq.decode(codes.reshape(size, lists.code_size)))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, ivf.d), dtype=np.float32)
    return np.concatenate(ids).astype(np.int64), np.concatenate(vecs)


def make_index_store(settings, dim: int) -> IndexStore:
    """The index store as the settings describe it (``settings``: :class:`ragsvc.settings.Settings`)."""
    return IndexStore(settings.index_dir, dim, kind=settings.index_kind, ivf_min_vectors=settings.ivf_min_vectors,
                      nprobe=settings.ivf_nprobe, use_gpu=settings.faiss_gpu)
