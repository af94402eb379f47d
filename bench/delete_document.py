"""Deleting a large document: how long until its text is gone from search, and everything is cleaned up.

A collection holds ``--others`` chunks of other documents plus one document of ``--chunks`` chunks
(10,000 by default), with real rows (SQLite or PostgreSQL), a real FAISS index and real files. We time
``DocumentService.delete`` (one DELETE with the database's ON DELETE CASCADE, then one FAISS
``remove_ids`` and one index write) against the baseline people often write with an ORM: load the
chunks and delete them object by object, then the document. Vectors are random unit vectors: the
delete path does not depend on their values, and embedding 60k chunks would take half an hour here.

    .venv/bin/python bench/delete_document.py [--db sqlite|postgresql] [--chunks 10000] [--others 50000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragsvc.db import Chunk, Collection, Document, Job  # noqa: E402
from ragsvc.db.migrate import upgrade  # noqa: E402
from ragsvc.db.session import make_engine, make_sessionmaker  # noqa: E402
from ragsvc.documents import DocumentService  # noqa: E402
from ragsvc.index_store import IndexStore  # noqa: E402
from ragsvc.settings import Settings  # noqa: E402

DIM = 384


def make_document(sessions, store: IndexStore, files: Path, coll_id: str, n: int, rng) -> str:
    doc_id = uuid.uuid4().hex
    folder = files / doc_id
    folder.mkdir(parents=True)
    (folder / "original").write_bytes(b"x" * 1024)
    with sessions() as s, s.begin():
        s.add(Document(id=doc_id, collection_id=coll_id, filename=f"{doc_id}.pdf", kind="pdf", size_bytes=1024,
                       sha256=doc_id * 2, storage_path=str(folder / "original"), status="ready", chunks=n))
        s.flush()
        s.add(Job(document_id=doc_id, status="done"))
        s.execute(insert(Chunk), [
            {"document_id": doc_id, "ordinal": i, "text": f"chunk {i} of {doc_id} " * 20, "heading_path": "",
             "page_start": i // 4 + 1, "page_end": i // 4 + 1, "char_start": i * 400, "char_end": i * 400 + 399,
             "token_count": 120, "content_hash": ""} for i in range(n)])
    with sessions() as s:
        ids = list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc_id)))
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store.add(coll_id, ids, vecs)
    return doc_id


def orm_baseline_delete(sessions, store: IndexStore, doc_id: str) -> None:
    with sessions() as s:
        doc = s.get(Document, doc_id)
        chunks = s.scalars(select(Chunk).where(Chunk.document_id == doc_id)).all()
        ids = [c.id for c in chunks]
        for c in chunks:
            s.delete(c)
        s.flush()
        s.delete(doc)
        s.commit()
        store.remove(doc.collection_id, ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--pg-admin", default="postgresql://127.0.0.1:5432/test",
                    help="libpq URL of a database from which a throw-away benchmark database is created")
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--others", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="bench/results/delete_document.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="ragsvc-delete-"))
    pg_name = f"ragsvc_bench_{uuid.uuid4().hex[:8]}"
    if args.db == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        import psycopg

        with psycopg.connect(args.pg_admin, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{pg_name}"')
        url = args.pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{pg_name}"
    upgrade(url)
    settings = Settings(data_dir=tmp / "data", index_dir=tmp / "indexes", database_url=url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    store = IndexStore(settings.index_dir, DIM)
    service = DocumentService(settings, sessions, store)
    with sessions() as s, s.begin():
        coll = Collection(name="bench")
        s.add(coll)
    files = settings.files_dir.resolve()
    for _ in range(max(1, args.others // 10_000)):
        make_document(sessions, store, files, coll.id, min(10_000, args.others), rng)
    ours, baseline = [], []
    for run in range(args.runs):
        for name, times, fn in (("ragsvc", ours, service.delete),
                                ("orm", baseline, lambda d: orm_baseline_delete(sessions, store, d))):
            doc_id = make_document(sessions, store, files, coll.id, args.chunks, rng)
            t = time.perf_counter()
            fn(doc_id)
            times.append(time.perf_counter() - t)
            with sessions() as s:
                assert s.get(Document, doc_id) is None
                assert s.scalar(select(Chunk.id).where(Chunk.document_id == doc_id).limit(1)) is None
            print(f"run {run + 1} {name}: {times[-1]:.3f} s", file=sys.stderr)
    total = store.size(coll.id)
    result = {"db": args.db, "chunks_deleted": args.chunks, "vectors_in_collection": total + args.chunks,
              "ragsvc_s": statistics.median(ours), "orm_baseline_s": statistics.median(baseline),
              "speedup": statistics.median(baseline) / statistics.median(ours), "runs": args.runs,
              "ragsvc_all": ours, "orm_all": baseline}
    print(f"| {args.db} | {args.chunks:,} | {total + args.chunks:,} | {result['ragsvc_s']:.3f} s "
          f"| {result['orm_baseline_s']:.3f} s | {result['speedup']:.1f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()) if out.exists() else {}
    runs[args.db] = result
    out.write_text(json.dumps(runs, indent=2))
    engine.dispose()
    if args.db == "postgresql":
        import psycopg

        with psycopg.connect(args.pg_admin, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
