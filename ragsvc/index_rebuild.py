"""``ragsvc index rebuild [COLLECTION]``: a collection's FAISS segments recreated from the database.

The vectors are read from ``chunks.embedding`` (the source of truth, issue 13 item 2) for every chunk
of a ready document, and written as one segment (IVF-trained when big enough): nothing is embedded.
Rows from before revision 0007 have no vector in the database yet; their vectors are copied from the
collection's current index into the rows first (once: the next rebuild reads them from the rows), and
rows the index lacks too are counted and left to ``ragsvc index check --repair``, which embeds them.
"""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import Chunk, Collection, Document, DocumentStatus
from ragsvc.index_store import IndexStore

BATCH = 5000  # rows per SQL read and per backfill write


def _ready_vectors(sessions: sessionmaker[Session], collection_id: str, dim: int):
    """(ids with a vector, their vectors, ids without one) of the collection's ready chunks."""
    ids, blobs, missing = [], [], []
    with sessions() as session:
        result = session.execute(
            select(Chunk.id, Chunk.embedding).join(Document, Document.id == Chunk.document_id)
            .where(Document.collection_id == collection_id, Document.status == DocumentStatus.READY)
            .order_by(Chunk.id).execution_options(yield_per=BATCH))
        for cid, blob in result:
            if blob is not None and len(blob) == 4 * dim:
                ids.append(cid)
                blobs.append(blob)
            else:
                missing.append(cid)
    vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim) if ids else \
        np.zeros((0, dim), dtype=np.float32)
    return np.asarray(ids, dtype=np.int64), vecs, missing


def _backfill(sessions: sessionmaker[Session], store: IndexStore, collection_id: str, missing: list[int]):
    """Copy the vectors of rows without one from the collection's current index into the rows."""
    have_ids, have_vecs = store.all_vectors(collection_id)
    pos = {int(i): n for n, i in enumerate(have_ids)}
    found = [i for i in missing if i in pos]
    for start in range(0, len(found), BATCH):
        part = found[start:start + BATCH]
        with sessions() as session:
            session.execute(update(Chunk), [{"id": i, "embedding": have_vecs[pos[i]].astype(np.float32).tobytes()}
                                            for i in part])
            session.commit()
    return found


def rebuild_collection(sessions: sessionmaker[Session], store: IndexStore, collection_id: str, dim: int) -> dict:
    t0 = time.perf_counter()
    since = store.next_seq(collection_id)  # first: writes from now on are kept on top (IndexStore.rebuild)
    ids, vecs, missing = _ready_vectors(sessions, collection_id, dim)
    backfilled = _backfill(sessions, store, collection_id, missing) if missing else []
    if backfilled:
        ids, vecs, missing = _ready_vectors(sessions, collection_id, dim)
    t_read = time.perf_counter()
    stats = store.rebuild(collection_id, ids, vecs, since)
    return {**stats, "read_s": round(t_read - t0, 3), "backfilled_from_index": len(backfilled),
            "rows_without_vector": len(missing),
            "vectors_per_s": round(len(ids) / stats["seconds"]) if stats["seconds"] else None}


def rebuild(sessions: sessionmaker[Session], store: IndexStore, dim: int, collection: str | None = None) -> list[dict]:
    with sessions() as session:
        q = select(Collection.id, Collection.name).order_by(Collection.name)
        if collection is not None:
            q = q.where(Collection.name == collection)
        colls = session.execute(q).all()
    return [{"collection": name, "collection_id": cid, **rebuild_collection(sessions, store, cid, dim),
             "keyword_entries": _rebuild_keywords(sessions, cid)}
            for cid, name in colls]


def _rebuild_keywords(sessions: sessionmaker[Session], collection_id: str) -> int:
    """The keyword entries too: they live in the database, so this is one transaction of SQL."""
    from ragsvc.keyword_index import reindex_collection

    with sessions() as session:
        n = reindex_collection(session, collection_id)
        session.commit()
    return n
