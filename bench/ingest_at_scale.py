"""Small-document ingestion into a collection that already holds N chunks, against an empty one (issue 13).

    python bench/ingest_at_scale.py                      # N = 1,000,000, SQLite, 24 documents each side
    python bench/ingest_at_scale.py --chunks 100000 --docs 12
    python bench/ingest_at_scale.py --db-url postgresql+psycopg://127.0.0.1:5432/bench_scale

The real ingestion pipeline (parse in the sandbox, chunk, embed with the packaged model, write rows,
vectors and keyword entries, make ready) runs on small Markdown notes (4 chunks each), alternately into
the big collection and into an empty one in the same database and index folder, so both sides share
the machine's state at each moment. The big collection is built once (and reused from ``--cache``):
N chunk rows with their vectors and keyword entries, 200 per ready document, and one exact FAISS
segment over them (``IndexStore.rebuild``; an add never reads the existing segments, so their kind does
not change what an add costs). Reported per side: documents/s (from the median time per document), and the median seconds of the index and
database step (``store_s``: rows, FAISS segment, keyword entries, ready), which is the part that could
grow with the collection. Results: bench/results/ingest_at_scale.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import func, insert, select, text  # noqa: E402

from ingest.pipeline import Pipeline  # noqa: E402
from ragsvc.db import Chunk, Collection, Document, DocumentStatus  # noqa: E402
from ragsvc.db.migrate import upgrade  # noqa: E402
from ragsvc.db.session import make_engine, make_sessionmaker  # noqa: E402
from ragsvc.documents import DocumentService, Upload  # noqa: E402
from ragsvc.embedder import make_embedder  # noqa: E402
from ragsvc.index_store import IndexStore  # noqa: E402
from ragsvc.keyword_index import FTS_TABLE, PG_TABLE  # noqa: E402
from ragsvc.settings import Settings  # noqa: E402
from workers_throughput import note  # noqa: E402 - the same small notes as the workers benchmark

# A Zipf-like vocabulary, so the keyword index has long and short posting lists as real text does.
VOCAB = [f"w{i}" for i in range(20_000)]
PER_DOC = 200
DIM = 384


def build_big(sessions, store: IndexStore, coll_id: str, n: int, dialect: str) -> None:
    rng = np.random.default_rng(7)
    weights = 1.0 / np.arange(1, len(VOCAB) + 1)
    weights /= weights.sum()
    next_id = 1
    for start in range(0, n, 20_000):
        count = min(20_000, n - start)
        words = rng.choice(len(VOCAB), size=(count, 30), p=weights)
        vecs = rng.standard_normal((count, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with sessions() as s, s.begin():
            docs = [{"id": uuid.uuid4().hex, "collection_id": coll_id, "filename": f"bulk/{start // PER_DOC + d}.md",
                     "kind": "markdown", "size_bytes": 1, "sha256": "0" * 64, "storage_path": "",
                     "status": DocumentStatus.READY, "chunks": PER_DOC}
                    for d in range((count + PER_DOC - 1) // PER_DOC)]
            s.execute(insert(Document), docs)
            rows = [{"id": next_id + i, "document_id": docs[i // PER_DOC]["id"], "ordinal": i % PER_DOC,
                     "text": " ".join(VOCAB[w] for w in words[i]), "heading_path": "", "page_start": None,
                     "page_end": None, "page_label": None, "char_start": 0, "char_end": 1, "token_count": 40,
                     "content_hash": f"{next_id + i:064x}", "embedding": vecs[i].tobytes()} for i in range(count)]
            s.execute(insert(Chunk), rows)
            lo, hi = next_id, next_id + count - 1
            if dialect == "sqlite":
                s.execute(text(f"INSERT INTO {FTS_TABLE} (rowid, collection_id, body) SELECT id, :c, "
                               "heading_path || char(10) || text FROM chunks WHERE id BETWEEN :lo AND :hi"),
                          {"c": coll_id, "lo": lo, "hi": hi})
            else:
                s.execute(text(f"INSERT INTO {PG_TABLE} (chunk_id, collection_id, tsv) SELECT id, :c, "
                               "to_tsvector('simple', heading_path || E'\\n' || text) FROM chunks "
                               "WHERE id BETWEEN :lo AND :hi"), {"c": coll_id, "lo": lo, "hi": hi})
        store.rebuild(coll_id, np.arange(lo, hi + 1), vecs) if start == 0 else store.add(
            coll_id, list(range(lo, hi + 1)), vecs, fresh=True)
        next_id += count
        print(f"  built {start + count:,} chunks", file=sys.stderr, flush=True)
    if dialect != "sqlite":  # sequences do not follow explicit ids
        with sessions() as s, s.begin():
            s.execute(text("SELECT setval(pg_get_serial_sequence('chunks', 'id'), :v)"), {"v": next_id})
    store.compact_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--docs", type=int, default=24, help="documents ingested into each collection")
    ap.add_argument("--db-url", default=None, help="default: SQLite in the cache folder")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/ragsvc-bench-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/ingest_at_scale.json")
    args = ap.parse_args()
    cache = args.cache / f"n{args.chunks}"
    cache.mkdir(parents=True, exist_ok=True)
    url = args.db_url or f"sqlite:///{cache / 'bench.db'}"
    upgrade(url)
    settings = Settings(data_dir=cache / "data", index_dir=cache / "indexes", database_url=url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    store = IndexStore(settings.index_dir, DIM)
    docs = DocumentService(settings, sessions, store)
    with sessions() as s:
        for name in ("big", "empty"):
            if s.scalar(select(Collection).where(Collection.name == name)) is None:
                s.add(Collection(name=name))
        s.commit()
        big_id = s.scalar(select(Collection.id).where(Collection.name == "big"))
        held = s.scalar(select(func.count()).select_from(Chunk).join(Document).where(Document.collection_id == big_id))
    t0 = time.perf_counter()
    if held < args.chunks:
        if held:
            sys.exit(f"{cache} holds a partial build ({held} chunks); remove it and run again.")
        build_big(sessions, store, big_id, args.chunks, engine.dialect.name)
    build_s = time.perf_counter() - t0
    embedder = make_embedder(settings)
    pipeline = Pipeline(sessions, embedder, store, settings.chunk_tokens, settings.files_dir.resolve())
    run = uuid.uuid4().hex[:6]
    # Warm-up: the embedder's first call and the parse sandbox's start are not part of either side.
    pipeline.process(docs.create("empty", [Upload(f"warm-{run}.md", note(10_000))])[0]["id"])
    sides: dict[str, dict[str, list[float]]] = {"big": {"total_s": [], "store_s": []},
                                                "empty": {"total_s": [], "store_s": []}}
    for i in range(args.docs):
        for name in (("big", "empty") if i % 2 == 0 else ("empty", "big")):
            doc = docs.create(name, [Upload(f"{run}/{name}-{i}.md", note(i))])[0]
            t = time.perf_counter()
            stats = pipeline.process(doc["id"])
            sides[name]["total_s"].append(time.perf_counter() - t)
            sides[name]["store_s"].append(stats["store_s"])
    out = {"chunks_in_big_collection": args.chunks, "database": engine.dialect.name, "docs_per_side": args.docs,
           "build_s": round(build_s, 1) if held < args.chunks else "cached",
           "sides": {}}
    for name, v in sides.items():
        # Medians, not sums: on shared cores one document can wait minutes for a core (an outlier that
        # says nothing about the collection's size); every time is kept in the results too.
        out["sides"][name] = {"docs_per_s": round(1 / statistics.median(v["total_s"]), 3),
                              "total_s": [round(x, 3) for x in v["total_s"]],
                              "median_total_s": round(statistics.median(v["total_s"]), 3),
                              "median_store_s": round(statistics.median(v["store_s"]), 4),
                              "p90_store_s": round(sorted(v["store_s"])[int(0.9 * (len(v["store_s"]) - 1))], 4)}
    out["rate_ratio_big_over_empty"] = round(out["sides"]["big"]["docs_per_s"] / out["sides"]["empty"]["docs_per_s"], 3)
    print(json.dumps(out, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[f"{engine.dialect.name}-{args.chunks}"] = out
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
