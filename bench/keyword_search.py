"""Keyword search: today's bm25s index vs the databases' own full-text engines (issue 13 item 3).

Two measurements, both through ragsvc's real code (``ragsvc/keyword_index.py``: ``index_document`` in the
transaction that makes a document ready, ``KeywordStore.search``) on migrated databases:

1. **Recall** on the eval set: the corpus files are chunked exactly as the pipeline does
   (``bench/eval/corpus.py``'s ``chunks_of``), each chunk is indexed as ``f"{heading_path}\\n{text}"``, and
   every question of ``bench/eval/*.jsonl`` with evidence retrieves its top 10 chunks by keywords only.
   recall@10 = share of questions all of whose evidence strings (whitespace-normalised, as ``ragsvc eval``
   matches them) lie in one of the top 10 (``bench/embedding_recall.py``'s definition). Engines: bm25s as
   ragsvc used it (English stopwords, no stemming), SQLite FTS5 ``bm25()``, PostgreSQL ``ts_rank``.
2. **Scale**: N synthetic chunks of ~100 tokens drawn from a Zipf vocabulary (s=1.07, 50k words; the
   33 most frequent words are bm25s's English stopwords, so the commonest words behave as in English),
   in 200-chunk documents of one collection. Then the p50/p99 of ``KeywordStore.search`` (k=25, what
   retrieval asks for k=10) over question-like queries (3 stopwords + 5 content words drawn from the same
   distribution): **before** (the previous query path, bench/keyword_before.py) and **after** (today's)
   alternating query by query in one process on the same database, plus the exact ranking (no pruning)
   on the first ``--exact-queries`` for the top-10 overlap; and the index work to add a 200-chunk
   document (``index_document``) and to delete it. Recall (1.) also runs before and after.

    .venv/bin/python bench/keyword_search.py recall CORPUS_DIR      # bench/eval/corpus.py build CORPUS_DIR
    .venv/bin/python bench/keyword_search.py scale --chunks 1000000 [--engines sqlite postgresql]

The scale databases are built once and kept (``--cache``, default /tmp/ragsvc-kw-cache, for the SQLite
file; a PostgreSQL database ``ragsvc_kwcache_<version>_<chunks>_<vocab>_<s>`` at ``RAGSVC_TEST_PG``,
default ``postgresql://127.0.0.1:5432/test``), migrated to head on reuse; ``--rebuild`` starts over. The
same seed draws the queries before the chunks, so a cached database sees the same queries. Results are
merged into ``bench/results/keyword_search.json``; the recall databases are fresh and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "keyword_search.json"
PG_ADMIN_URL = os.environ.get("RAGSVC_TEST_PG", "postgresql://127.0.0.1:5432/test")
K = 10
DOC_CHUNKS = 200


@contextmanager
def database(engine_name: str, tmp: Path):
    """A migrated, empty database of the kind named; yields its SQLAlchemy URL."""
    from ragsvc.db.migrate import upgrade

    if engine_name == "sqlite":
        url = f"sqlite:///{tmp / f'kw-{uuid.uuid4().hex[:6]}.db'}"
        upgrade(url)
        yield url
        return
    import psycopg

    name = f"ragsvc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def insert_document(session, collection_id: str, heads_texts: list[tuple[str, str]]) -> str:
    """A ready document with these chunks, its keyword entries written as the pipeline's ready step does."""
    from sqlalchemy import insert

    from ragsvc.db import Chunk, Document, DocumentStatus
    from ragsvc.keyword_index import index_document

    doc = Document(collection_id=collection_id, filename="f.txt", kind="text", size_bytes=1, sha256="x",
                   storage_path="p", status=DocumentStatus.READY)
    session.add(doc)
    session.flush()
    session.execute(insert(Chunk), [
        {"document_id": doc.id, "ordinal": i, "text": t, "heading_path": h, "char_start": 0, "char_end": len(t),
         "token_count": 1, "content_hash": ""} for i, (h, t) in enumerate(heads_texts)])
    index_document(session, doc.id, collection_id)
    return doc.id


def new_collection(session) -> str:
    from ragsvc.db import Collection

    coll = Collection(name=f"bench-{uuid.uuid4().hex[:6]}")
    session.add(coll)
    session.flush()
    return coll.id


# --- 1. recall on the eval set ---------------------------------------------------------------------------

def recall(args: argparse.Namespace) -> dict:
    import bm25s

    from bench.eval.corpus import chunks_of
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.evaluation import load_questions, normalize_ws
    from sqlalchemy import text

    from bench.keyword_before import KeywordStoreBefore
    from ragsvc.keyword_index import POSTINGS_BUDGET, KeywordStore

    files = sorted((ROOT / "bench" / "eval").glob("*.jsonl"))
    chunks = chunks_of(args.corpus)  # (file, heading path, text)
    corpus_files = {p.name for p in args.corpus.iterdir() if p.is_dir()}
    # A question file counts only when its documents are in the corpus (debian.jsonl needs debian/).
    files = [f for f in files if f.stem in corpus_files]
    questions = [q for f in files for q in load_questions(f) if q.evidence]
    flat = [normalize_ws(t) for _, _, t in chunks]
    bodies = [f"{h}\n{t}" for _, h, t in chunks]

    def score(tops: list[list[int]]) -> dict:
        hits = found = pieces = 0
        missed = []
        for q, top in zip(questions, tops):
            got = [any(normalize_ws(e) in flat[i] for i in top) for e in q.evidence]
            hits += all(got)
            found += sum(got)
            pieces += len(got)
            if not all(got):
                missed.append(q.id)
        return {"recall_at_10": round(hits / len(questions), 4), "hits": hits,
                "piece_recall": round(found / pieces, 4), "missed": missed}

    out = {"corpus": str(args.corpus), "question_files": [f.name for f in files], "chunks": len(chunks),
           "questions_with_evidence": len(questions), "engines": {}}
    model = bm25s.BM25()  # today's ragsvc/keyword_index.py, as it was before issue 13
    model.index(bm25s.tokenize(bodies, stopwords="en", show_progress=False), show_progress=False)
    tops = []
    for q in questions:
        tok = bm25s.tokenize([q.question], stopwords="en", show_progress=False)
        if not tok.ids or not tok.ids[0]:
            tops.append([])
            continue
        docs, scores = model.retrieve(tok, k=K, show_progress=False, n_threads=1)
        tops.append([int(d) for d, s in zip(docs[0], scores[0]) if s > 0])
    out["engines"]["bm25s"] = score(tops)
    print("bm25s", out["engines"]["bm25s"], file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.engines:
            with database(name, Path(tmp)) as url:
                engine = make_engine(url)
                sessions = make_sessionmaker(engine)
                with sessions() as s:
                    coll = new_collection(s)
                    by_file: dict[str, list[int]] = {}
                    for i, (f, _, _) in enumerate(chunks):
                        by_file.setdefault(f, []).append(i)
                    row_of: dict[int, int] = {}  # chunk id -> index into chunks
                    from sqlalchemy import select

                    from ragsvc.db import Chunk
                    for f, idx in by_file.items():
                        doc_id = insert_document(s, coll, [(chunks[i][1], chunks[i][2]) for i in idx])
                        ids = s.scalars(select(Chunk.id).where(Chunk.document_id == doc_id).order_by(Chunk.ordinal))
                        row_of.update(zip(ids, idx))
                    s.commit()
                    if name == "postgresql":  # what autovacuum does: pg_stats feeds the pruning
                        s.execute(text("ANALYZE keyword_entries"))
                        s.commit()
                    # Before: the previous commit's query path (bench/keyword_before.py); after: today's.
                    stores = [(f"{name}_before", KeywordStoreBefore()), (name, KeywordStore())]
                    stores += [(f"{name}_budget_{b}", KeywordStore(postings_budget=b, rank_cap=b))
                               for b in args.budgets if b != POSTINGS_BUDGET]
                    for label, store in stores:
                        tops = [[row_of[cid] for cid, _ in store.search(s, coll, q.question, K)] for q in questions]
                        out["engines"][label] = score(tops)
                        print(label, out["engines"][label], file=sys.stderr)
                engine.dispose()
    return out


# --- 2. latency and index work at scale --------------------------------------------------------------------

def vocabulary(n_words: int, rng) -> list[str]:
    from ragsvc.keyword_index import STOPWORDS

    letters = "abcdefghijklmnopqrstuvwxyz"
    words, seen = sorted(STOPWORDS), set(STOPWORDS)
    while len(words) < n_words:
        w = "".join(letters[i] for i in rng.integers(0, 26, size=int(rng.integers(3, 10))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def zipf_sampler(n_words: int, s: float, rng):
    import numpy as np

    p = 1.0 / np.arange(1, n_words + 1) ** s
    cdf = np.cumsum(p / p.sum())
    return lambda size: np.minimum(np.searchsorted(cdf, rng.random(size)), n_words - 1)


CACHE_VERSION = "v1"  # bump when index_document's format changes: cached databases are rebuilt


@contextmanager
def cached_database(engine_name: str, args: argparse.Namespace, fill):
    """A migrated database holding the synthetic collection, built once by ``fill(session)`` (returns the
    collection id) and kept under ``--cache`` (SQLite file) or as a PostgreSQL database named after the
    parameters, so later runs measure queries without a 2-5 minute bulk load. Yields (url, collection id,
    build seconds or None when reused)."""
    from sqlalchemy import text

    from ragsvc.db.migrate import upgrade
    from ragsvc.db.session import make_engine, make_sessionmaker

    tag = f"{CACHE_VERSION}_{args.chunks}_{args.vocab}_{str(args.zipf_s).replace('.', '')}"
    if engine_name == "sqlite":
        args.cache.mkdir(parents=True, exist_ok=True)
        path = args.cache / f"kw_{tag}.db"
        url, exists = f"sqlite:///{path}", path.exists()
    else:
        import psycopg

        name = f"ragsvc_kwcache_{tag}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
            if exists and args.rebuild:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                exists = False
            if not exists:
                admin.execute(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    if engine_name == "sqlite" and exists and args.rebuild:
        path.unlink()
        exists = False
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    build_s = None
    try:
        if exists:
            with sessions() as s:  # a build that did not finish left no marker: start over
                done = s.execute(text("SELECT collection_id FROM bench_done")).first() \
                    if _has_table(s, "bench_done") else None
            if done is None:
                engine.dispose()
                args.rebuild = True
                with cached_database(engine_name, args, fill) as got:
                    yield got
                return
            coll = done[0]
            upgrade(url)  # migrations added since the build (revision 0010: statistics target)
        else:
            upgrade(url)
            t0 = time.perf_counter()
            with sessions() as s:
                coll = fill(s)
                s.execute(text("CREATE TABLE bench_done (collection_id VARCHAR(32))"))
                s.execute(text("INSERT INTO bench_done VALUES (:c)"), {"c": coll})
                s.commit()
            build_s = time.perf_counter() - t0
        yield url, coll, build_s
    finally:
        engine.dispose()


def _has_table(session, name: str) -> bool:
    from sqlalchemy import inspect

    return inspect(session.get_bind()).has_table(name)


def percentiles(lat: list[float]) -> dict:
    lat = sorted(lat)
    return {"queries": len(lat), "search_ms_p50": round(statistics.median(lat), 2),
            "search_ms_p99": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2),
            "search_ms_max": round(lat[-1], 2)}


def scale(args: argparse.Namespace) -> dict:
    import numpy as np
    from sqlalchemy import delete, text

    from bench.keyword_before import KeywordStoreBefore
    from ragsvc.db import Document
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.keyword_index import KeywordStore

    rng = np.random.default_rng(0)
    words = np.array(vocabulary(args.vocab, rng))
    draw = zipf_sampler(args.vocab, args.zipf_s, rng)
    n_stop = 33

    def chunk_texts(n: int) -> list[str]:
        lens = rng.integers(80, 121, size=n)
        toks = words[draw(int(lens.sum()))]
        out, at = [], 0
        for ln in lens:
            out.append(" ".join(toks[at:at + ln]))
            at += ln
        return out

    def content_words(n: int) -> list[str]:
        got = []
        while len(got) < n:
            r = int(draw(1)[0])
            if r >= n_stop:
                got.append(str(words[r]))
        return got

    # Drawn before the chunks, so a cached database and a fresh one see the same queries.
    queries = [" ".join(list(words[rng.integers(0, n_stop, 3)]) + content_words(5)) for _ in range(args.queries)]

    def fill(s, name: str) -> str:
        coll = new_collection(s)
        s.commit()
        if name == "postgresql":  # bulk load: build the GIN index once at the end
            s.execute(text("DROP INDEX ix_keyword_entries_tsv"))
            s.commit()
        t0 = time.perf_counter()
        for start in range(0, args.chunks, DOC_CHUNKS):
            insert_document(s, coll, [("", t) for t in chunk_texts(min(DOC_CHUNKS, args.chunks - start))])
            if (start // DOC_CHUNKS) % 50 == 49:
                s.commit()
                print(f"{name}: {start + DOC_CHUNKS} chunks, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        s.commit()
        if name == "postgresql":
            s.execute(text("CREATE INDEX ix_keyword_entries_tsv ON keyword_entries USING gin (tsv)"))
            s.commit()
        else:
            s.execute(text("INSERT INTO keyword_fts(keyword_fts) VALUES ('optimize')"))
            s.commit()
        return coll

    results = {"chunks": args.chunks, "tokens_per_chunk": "80-120", "vocabulary": args.vocab,
               "zipf_s": args.zipf_s, "queries": args.queries, "k": 25, "engines": {}}
    for name in args.engines:
        with cached_database(name, args, lambda s, name=name: fill(s, name)) as (url, coll, build_s):
            engine = make_engine(url)
            sessions = make_sessionmaker(engine)
            runs: dict[str, list] = {}
            with sessions() as s:
                if name == "postgresql":  # what autovacuum does: pg_stats feeds the pruning
                    s.execute(text("ANALYZE keyword_entries"))
                    s.commit()
                # Before (the query path of the previous commit, bench/keyword_before.py), after (today's),
                # and the exact ranking (no pruning) on a share of the queries for overlap. Before and after
                # alternate query by query, so load from other work hits both alike.
                stores = [("before", KeywordStoreBefore()), ("after", KeywordStore())]
                stores += [(f"after_budget_{b}_cap_{c}", KeywordStore(postings_budget=b, rank_cap=c))
                           for b, c in (v.split(":") for v in args.variants) for b, c in [(int(b), int(c))]]
                for q in queries[:5]:  # warm the caches
                    for _, store in stores:
                        store.search(s, coll, q, 25)
                for label, _ in stores:
                    runs[label] = [[], []]
                for q in queries:
                    for label, store in stores:
                        t = time.perf_counter()
                        top = [c for c, _ in store.search(s, coll, q, 25)]
                        runs[label][0].append((time.perf_counter() - t) * 1000)
                        runs[label][1].append(top)
                exact = KeywordStoreBefore(postings_budget=10**15)
                runs["exact"] = [[], []]
                for q in queries[:args.exact_queries]:
                    t = time.perf_counter()
                    runs["exact"][1].append([c for c, _ in exact.search(s, coll, q, 25)])
                    runs["exact"][0].append((time.perf_counter() - t) * 1000)
            # Index work of one more 200-chunk document: insert rows + entries, then delete it (the
            # entries go with the rows). Timed around the whole transaction, commit included.
            add, rm = [], []
            for _ in range(args.doc_trials):
                texts = chunk_texts(DOC_CHUNKS)
                with sessions() as s:
                    t = time.perf_counter()
                    doc_id = insert_document(s, coll, [("", x) for x in texts])
                    s.commit()
                    add.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    s.execute(delete(Document).where(Document.id == doc_id))
                    s.commit()
                    rm.append(time.perf_counter() - t)
            engine.dispose()
        res: dict = {"build_s": round(build_s, 1) if build_s is not None else "cached"}
        exact_tops = runs["exact"][1]
        for label, (lat, tops) in runs.items():
            res[label] = percentiles(lat) | {"mean_hits": round(statistics.mean(len(t) for t in tops), 1)}
            if label != "exact":  # how much pruning changes the answer: share of the exact top 10 kept
                res[label]["top10_overlap_with_exact"] = round(statistics.mean(
                    len(set(a[:10]) & set(b[:10])) / max(1, min(10, len(b)))
                    for a, b in zip(tops, exact_tops)), 4)
        results["engines"][name] = res | {
            "add_200_chunk_doc_s_median": round(statistics.median(add), 4),
            "delete_200_chunk_doc_s_median": round(statistics.median(rm), 4),
        }
        print(name, json.dumps(results["engines"][name]), file=sys.stderr)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("recall")
    r.add_argument("corpus", type=Path)
    r.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    r.add_argument("--budgets", nargs="+", type=int, default=[],
                   help="more postings budgets (and rank caps) to prune at: a small one shows pruning's cost")
    r.add_argument("--key", default="recall", help="name of the result in the JSON file")
    s = sub.add_parser("scale")
    s.add_argument("--chunks", type=int, default=1_000_000)
    s.add_argument("--vocab", type=int, default=50_000)
    s.add_argument("--zipf-s", type=float, default=1.07)
    s.add_argument("--queries", type=int, default=300)
    s.add_argument("--doc-trials", type=int, default=5)
    s.add_argument("--exact-queries", type=int, default=100, help="queries also run exact (no pruning)")
    s.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    s.add_argument("--variants", nargs="*", default=[], metavar="BUDGET:CAP",
                   help="also time today's query at these postings budgets and rank caps")
    s.add_argument("--cache", type=Path, default=Path("/tmp/ragsvc-kw-cache"),
                   help="folder for the cached SQLite file (a few GB at 1M chunks); PostgreSQL keeps a database")
    s.add_argument("--rebuild", action="store_true", help="build the cached databases afresh")
    s.add_argument("--out", type=Path, default=OUT)
    r.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    result = recall(args) if args.what == "recall" else scale(args)
    result |= {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu_model": cpu,
               "cpus": os.cpu_count()}
    merged = json.loads(args.out.read_text()) if args.out.exists() else {}
    key = args.key if args.what == "recall" else f"scale_{args.chunks}"
    if args.what == "scale" and key in merged:  # a run of one engine keeps the other's last figures
        for name, res in merged[key].get("engines", {}).items():
            if name not in result["engines"]:
                result["engines"][name] = res | {"date": merged[key].get("date")}
    merged[key] = result
    args.out.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
