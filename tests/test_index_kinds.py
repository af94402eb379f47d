"""Index kinds on real FAISS: the IVF defaults the scale benchmark chose, single-threaded searches, and
why there is no HNSW kind (bench/retrieval_scale.py, docs/benchmarks.md "Retrieval at scale")."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from ragsvc.index_store import IndexStore
from ragsvc.settings import Settings

DIM = 384


def clustered(n: int, seed: int = 1) -> np.ndarray:
    """Unit vectors in loose clusters: neighbourhoods like real embeddings have (uniform ones have none)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((60, DIM)).astype(np.float32)
    vecs = centers[rng.integers(0, 60, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def recall_at_10(store: IndexStore, collection: str, corpus: np.ndarray, ids: np.ndarray, queries) -> float:
    exact = faiss.IndexFlatIP(DIM)
    exact.add(corpus)
    _, truth = exact.search(queries, 10)
    return float(np.mean([len(set(ids[truth[i]]) & {h for h, _ in store.search(collection, queries[i], 10)}) / 10
                          for i in range(len(queries))]))


def merge_all(store: IndexStore, collection: str) -> None:
    store.compact(collection, [seg.name for seg in store.segments(collection)])


def test_merged_segments_are_trained_at_their_own_size_and_keep_recall(tmp_path):
    settings = Settings()
    # New documents land in small exact segments; a merge reaching 4,000 vectors trains IVF lists for
    # its size (nlist = 4·√4000 = 252), and a later merge to 12,000 trains 438, ids kept.
    writer = IndexStore(tmp_path, DIM, kind="ivf", ivf_min_vectors=4000, nprobe=settings.ivf_nprobe)
    reader = IndexStore(tmp_path, DIM, kind="ivf", nprobe=settings.ivf_nprobe)
    vecs = clustered(12_000)

    def nlists() -> list:
        return [faiss.extract_index_ivf(faiss.read_index(str(tmp_path / "c" / seg.name))).nlist
                if seg.kind == "ivf" else "flat" for seg in writer.segments("c")]

    writer.add("c", list(range(4000)), vecs[:4000])
    assert nlists() == ["flat"]  # the write path never trains
    merge_all(writer, "c")
    assert nlists() == [int(4 * np.sqrt(4000))] == [252]
    writer.add("c", list(range(4000, 7000)), vecs[4000:7000])
    assert nlists() == [252, "flat"]
    writer.add("c", list(range(7000, 12_000)), vecs[7000:])
    merge_all(writer, "c")
    assert nlists() == [int(4 * np.sqrt(12_000))] == [438]
    assert reader.size("c") == 12_000
    queries = vecs[:100] + 0.05 * np.random.default_rng(2).standard_normal((100, DIM)).astype(np.float32)
    assert recall_at_10(reader, "c", vecs, np.arange(12_000), queries) >= 0.95
    # Every vector moved over intact under its own id: each one finds itself first.
    for i in (0, 4321, 6999, 11_999):
        top, score = reader.search("c", vecs[i], 1)[0]
        assert top == i and score == pytest.approx(1.0, abs=1e-5)

    gone = list(range(0, 12_000, 3))  # deletes keep working on the trained IVF segment
    assert writer.remove("c", gone) == len(gone)
    hits = {h for q in queries[:20] for h, _ in reader.search("c", q, 10)}
    assert hits and not hits & set(gone)


def test_ivf_outgrown_rule():
    from ragsvc.index_store import ivf_nlist, ivf_outgrown

    trained = ivf_nlist(100_000)
    assert trained == 1264
    assert not ivf_outgrown(trained, 199_000)
    assert ivf_outgrown(trained, 200_000)
    # Retrained at each doubling, a collection at 1M holds lists trained at 800k (not 100k).
    n, lists = 100_000, trained
    while n < 1_000_000:
        n += 1000
        if ivf_outgrown(lists, n):
            lists = ivf_nlist(n)
    assert lists == ivf_nlist(799_000) or lists == ivf_nlist(800_000)


def test_single_query_search_leaves_the_callers_threads_alone(tmp_path):
    store = IndexStore(tmp_path, DIM)
    vecs = clustered(500)
    store.add("c", list(range(500)), vecs)
    seen = {}

    def ask():  # a request thread of the API: it searches with one thread, and keeps its own setting
        faiss.omp_set_num_threads(2)
        seen["top"] = store.search("c", vecs[7], 3)[0][0]
        seen["threads"] = faiss.omp_get_max_threads()

    t = threading.Thread(target=ask)
    t.start()
    t.join()
    assert seen == {"top": 7, "threads": 2}


def test_hnsw_cannot_delete_which_is_why_there_is_no_hnsw_kind():
    # HNSW was as fast as IVF at equal recall in the benchmark, but a collection must forget deleted
    # documents and replaced versions: FAISS's HNSW graph has no removal, with or without an id map.
    hnsw = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    mapped = faiss.IndexIDMap2(faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT))
    vecs = clustered(200)
    hnsw.add(vecs)
    mapped.add_with_ids(vecs, np.arange(200, dtype=np.int64))
    for index in (hnsw, mapped):
        with pytest.raises(RuntimeError):
            index.remove_ids(np.array([1, 2], dtype=np.int64))


def test_ivf_training_runs_outside_the_write_lock_and_keeps_what_changed_meanwhile(tmp_path, monkeypatch):
    # k-means takes a minute at 1M vectors: other writers of the collection must not wait for the
    # compaction that trains, and what they add or delete while it runs must hold after its swap. A
    # gate holds training until the test has written; the gate is the only thing not real here.
    from ragsvc import index_store

    started, release = threading.Event(), threading.Event()
    real_ivf = faiss.IndexIVFFlat

    class GatedIVF(real_ivf):
        def train(self, x):  # noqa: ANN001, ANN201
            started.set()
            assert release.wait(60)
            return super().train(x)

    monkeypatch.setattr(index_store.faiss, "IndexIVFFlat", GatedIVF)
    store = IndexStore(tmp_path, DIM, kind="ivf", ivf_min_vectors=4000, nprobe=64)
    vecs = clustered(5500)
    store.add("c", list(range(3000)), vecs[:3000])
    store.add("c", list(range(3000, 5000)), vecs[3000:5000])
    trainer = threading.Thread(target=merge_all, args=(store, "c"))
    trainer.start()
    assert started.wait(60)

    def in_time(fn, *args) -> None:  # the call must finish while training is still held at the gate
        t = threading.Thread(target=fn, args=args)
        t.start()
        t.join(20)
        assert not t.is_alive(), f"{fn.__name__} waited for the training"

    in_time(store.add, "c", list(range(5000, 5500)), vecs[5000:])
    in_time(store.remove, "c", [0, 1, 2])
    assert store.compact("c") is None  # a second compaction of the collection skips, one runs
    assert store.search("c", vecs[5100], 1)[0][0] == 5100  # searchable before training ends (exact)
    release.set()
    trainer.join(60)
    segs = store.segments("c")
    assert [s.kind for s in segs] == ["ivf", "flat"] and segs[0].vectors == 5000  # merged; the new one kept
    index = faiss.read_index(str(tmp_path / "c" / segs[0].name))
    assert faiss.extract_index_ivf(index).nlist == int(4 * np.sqrt(5000))
    reader = IndexStore(tmp_path, DIM, kind="ivf", nprobe=64)
    assert reader.size("c") == 5500 - 3  # the deletes made during the merge still hide their ids
    for i in (3, 2999, 4000, 5100, 5499):
        assert reader.search("c", vecs[i], 1)[0][0] == i
    assert not {h for h, _ in reader.search("c", vecs[1], 10)} & {0, 1, 2}


def test_real_training_in_another_process_does_not_block_writers(tmp_path):
    # The same behaviour with nothing patched: a compacting process (as an ingestion worker) merges
    # 60k vectors past the IVF threshold and trains real k-means; while its compaction lock is held,
    # this process adds and deletes, and both hold in the segments it swaps in.
    import fcntl
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    vecs = clustered(62_000, seed=5)
    store = IndexStore(tmp_path, DIM, kind="ivf", ivf_min_vectors=50_000, nprobe=64)
    store.add("c", list(range(49_000)), vecs[:49_000])
    store.add("c", list(range(49_000, 60_000)), vecs[49_000:60_000])
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from tests.test_index_kinds import clustered, DIM, merge_all\n"
        "from ragsvc.index_store import IndexStore\n"
        "merge_all(IndexStore(%r, DIM, kind='ivf', ivf_min_vectors=50_000), 'c')\n"
    ) % (str(root), str(tmp_path))
    trainer = subprocess.Popen([sys.executable, "-c", script])
    lock_path = tmp_path / "c" / ".compact.lock"

    def training() -> bool:
        if not lock_path.exists():
            return False
        with open(lock_path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    deadline = time.monotonic() + 120
    while not training():
        assert trainer.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.01)
    store.add("c", list(range(60_000, 62_000)), vecs[60_000:])
    assert store.remove("c", [0, 1, 2]) == 3
    assert store.search("c", vecs[61_000], 1)[0][0] == 61_000  # searchable while the other process trains
    # Both writes finished while the other process still trained (its k-means takes seconds here).
    assert training(), "the writes waited for the training (or it ended too fast to tell)"
    assert trainer.wait(300) == 0
    segs = store.segments("c")
    assert [(s.kind, s.vectors) for s in segs] == [("ivf", 60_000), ("flat", 2000)]
    index = faiss.read_index(str(tmp_path / "c" / segs[0].name))
    assert faiss.extract_index_ivf(index).nlist == int(4 * np.sqrt(60_000))
    assert store.size("c") == 62_000 - 3
    for i in (3, 55_000, 61_999):
        assert store.search("c", vecs[i], 1)[0][0] == i
