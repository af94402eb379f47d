"""Index growth: what adding and deleting a 200-chunk document costs the dense index at 10k, 100k and 1M
vectors, segmented (ragsvc/index_store.py) against the one-file store it replaced (bench/
baseline_index_store.py, the same code as commit f0f5c0c), in the same run on the same vectors.

Vectors: 384-d, synthetic. 20,000 clustered "real" vectors (60 centres, noise 0.6, normalised), padded
to each size as bench/retrieval_scale.py pads real embeddings (``a + λ(b − c)``, λ ∈ [0.6, 1]). Queries:
200 held-out vectors made the same way; ground truth by exact search over the whole collection.

Per size, both stores start from the same collection (one IVF segment trained at that size by
``IndexStore.rebuild`` from ``RAGSVC_IVF_MIN_VECTORS`` = 100k up, exact below; the baseline gets the same
file as its ``index.faiss``). Then, ``--docs`` times each: add a 200-vector document (writer), let a
second, already loaded store instance (an API replica) search (it picks the change up), delete the
document. Reported: medians of the writer's wall time, the bytes written (new files, replaced files,
appended bytes), the reader's first-search time and the bytes it read; recall@10 and p50/p99 of
single-query search at ``RAGSVC_IVF_NPROBE`` (default 192) with the document segments in place; the
rebuild speed against raw FAISS (train + add); a small compaction; the bytes per vector a reader holds.

    flock /tmp/ragsvc-cpu.lock .venv/bin/python bench/index_growth.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from baseline_index_store import IndexStore as BaselineStore  # noqa: E402
from ragsvc.index_store import IndexStore  # noqa: E402
from ragsvc.settings import Settings  # noqa: E402
from retrieval_scale import synthesize  # noqa: E402

DIM, DOC = 384, 200


def corpus(n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((60, DIM)).astype(np.float32)
    base = centers[rng.integers(0, 60, 20_000)] + 0.6 * rng.standard_normal((20_000, DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    allv = synthesize(base, n + n_queries + 10 * DOC, seed=1)
    return allv[:n], allv[n:]


def files_of(folder: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in folder.iterdir():
        if not p.name.startswith("."):
            st = p.stat()
            out[p.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def written(before: dict, after: dict) -> int:
    total = 0
    for name, (ino, mtime, size) in after.items():
        old = before.get(name)
        if old is None or old[0] != ino:
            total += size
        elif old[1] != mtime:
            total += max(size - old[2], 0)
    return total


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def med(xs):
    return round(statistics.median(xs), 4)


def cycle(writer, reader, folder: Path, docs: np.ndarray, first_id: int, n_docs: int, bytes_read) -> dict:
    """``n_docs`` add → replica search → delete cycles; medians."""
    add_s, add_b, del_s, del_b, see_s, see_b = [], [], [], [], [], []
    for d in range(n_docs):
        ids = list(range(first_id + d * DOC, first_id + (d + 1) * DOC))
        vecs = docs[d * DOC:(d + 1) * DOC]
        before = files_of(folder)
        t, _ = timed(lambda: writer.add(folder.name, ids, vecs))
        add_s.append(t)
        mid = files_of(folder)
        add_b.append(written(before, mid))
        r0 = bytes_read(reader)
        t, hits = timed(lambda: reader.search(folder.name, vecs[0], 10))
        assert hits and hits[0][0] == ids[0], "the replica did not see the new document"
        see_s.append(t)
        see_b.append(bytes_read(reader) - r0)
        t, _ = timed(lambda: writer.remove(folder.name, ids))
        del_s.append(t)
        del_b.append(written(mid, files_of(folder)))
        assert ids[0] not in {h for h, _ in reader.search(folder.name, vecs[0], 10)}
    return {"add_s": med(add_s), "add_bytes": int(statistics.median(add_b)), "delete_s": med(del_s),
            "delete_bytes": int(statistics.median(del_b)), "replica_sees_s": med(see_s),
            "replica_reads_bytes": int(statistics.median(see_b)), "docs": n_docs,
            "doc_vector_bytes": DOC * DIM * 4}


def search_quality(store, name: str, xb: np.ndarray, queries: np.ndarray, xb_ids: np.ndarray) -> dict:
    exact = faiss.IndexFlatIP(DIM)
    exact.add(xb)
    _, truth = exact.search(queries, 10)
    truth = xb_ids[truth]
    del exact
    lat, rec = [], []
    for q, t in zip(queries, truth):
        s, hits = timed(lambda: store.search(name, q, 10))
        lat.append(s * 1000)
        rec.append(len(set(t.tolist()) & {h for h, _ in hits}) / 10)
    lat.sort()
    return {"recall_at_10": round(float(np.mean(rec)), 3), "p50_ms": round(lat[len(lat) // 2], 2),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2)}


def run_size(n: int, args, settings: Settings) -> dict:
    xb, extra = corpus(n, args.queries)
    queries, docs = extra[:args.queries], extra[args.queries:]
    ids = np.arange(n, dtype=np.int64)
    tmp = Path(tempfile.mkdtemp(prefix="index_growth-", dir=args.tmp))
    out: dict = {"vectors": n}
    try:
        mk = lambda: IndexStore(tmp / "seg", DIM, kind="ivf", ivf_min_vectors=settings.ivf_min_vectors,  # noqa: E731
                                nprobe=settings.ivf_nprobe)
        writer = mk()
        t, stats = timed(lambda: writer.rebuild("c", ids, xb))
        out["rebuild"] = {**stats, "seconds": round(t, 2), "vectors_per_s": round(n / t)}
        if n <= args.raw_max:  # k-means twice at 1M does not fit a run on these shared cores
            # Raw FAISS, the same work without the store: train (when IVF) and add, nothing written.
            t_raw, _ = timed(lambda: writer._merged_index(ids, xb))
            out["rebuild"]["raw_faiss_s"] = round(t_raw, 2)
            out["rebuild"]["raw_faiss_vectors_per_s"] = round(n / t_raw)
        gc.collect()
        reader = mk()
        reader.search("c", queries[0], 10)  # loaded, as a running replica is
        out["segmented"] = cycle(writer, reader, tmp / "seg" / "c", docs, n + 10, args.docs, lambda r: r.bytes_read)
        for d in range(4):  # four documents stay: the collection as searched has small segments too
            writer.add("c", list(range(n + 10_000 + d * DOC, n + 10_000 + (d + 1) * DOC)), docs[d * DOC:(d + 1) * DOC])
        out["segmented"]["search"] = search_quality(
            reader, "c", np.vstack([xb, docs[:4 * DOC]]), queries,
            np.concatenate([ids, np.arange(n + 10_000, n + 10_000 + 4 * DOC)]))
        out["segmented"]["segments_searched"] = len(reader.segments("c"))
        out["segmented"]["replica_bytes_per_vector"] = round(reader.memory_bytes("c") / reader.size("c"), 1)
        t, comp = timed(lambda: writer.compact("c"))  # the four document segments: one tier-0 merge
        out["segmented"]["compaction"] = {**(comp or {}), "seconds": round(t, 3)}
        del writer, reader
        gc.collect()
        if not args.no_baseline:
            big = max((tmp / "seg" / "c").glob("seg-*.faiss"), key=lambda p: p.stat().st_size)
            (tmp / "base" / "c").mkdir(parents=True)
            shutil.copy(big, tmp / "base" / "c" / "index.faiss")  # the same collection, as one file
            bw = BaselineStore(tmp / "base", DIM, kind="ivf", ivf_min_vectors=settings.ivf_min_vectors,
                               nprobe=settings.ivf_nprobe)
            br = BaselineStore(tmp / "base", DIM, kind="ivf", nprobe=settings.ivf_nprobe)
            br.search("c", queries[0], 10)
            read = {"n": 0}

            def baseline_read(r):  # the baseline reloads the whole file when it changed
                entry = r._cache.get("c")
                if entry is not None and entry.stamp != read.get("stamp"):
                    read["n"] += entry.stamp[2]
                    read["stamp"] = entry.stamp
                return read["n"]

            baseline_read(br)
            out["baseline"] = cycle(bw, br, tmp / "base" / "c", docs, n + 10, args.baseline_docs, baseline_read)
            out["baseline"]["search"] = search_quality(br, "c", xb, queries, ids)
            del bw, br
            gc.collect()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--docs", type=int, default=5, help="add/delete cycles per size (segmented)")
    p.add_argument("--baseline-docs", type=int, default=3, help="add/delete cycles per size (baseline)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--raw-max", type=int, default=100_000, help="largest size also timed as raw FAISS train + add")
    p.add_argument("--merge", action="store_true", help="keep the other sizes already in --out")
    p.add_argument("--tmp", default=None, help="folder for the index files (default: the system's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "index_growth.json"))
    args = p.parse_args()
    faiss.omp_set_num_threads(faiss.omp_get_max_threads())
    settings = Settings()
    results = [run_size(int(s), args, settings) for s in args.sizes.split(",")]
    if args.merge and Path(args.out).exists():  # sizes run separately (the 1M step alone) into one file
        done = {r["vectors"] for r in results}
        results = [r for r in json.loads(Path(args.out).read_text())["sizes"] if r["vectors"] not in done] + results
        results.sort(key=lambda r: r["vectors"])
    meta = {"dim": DIM, "doc_vectors": DOC, "nprobe": settings.ivf_nprobe, "ivf_min_vectors": settings.ivf_min_vectors,
            "omp_threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__}
    Path(args.out).write_text(json.dumps({"meta": meta, "sizes": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
