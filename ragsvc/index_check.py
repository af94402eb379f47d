"""``ragsvc index check [--repair]``: the FAISS indexes against the database, which is the source of truth.

A collection's index should hold exactly one vector per chunk of its ready documents. Two kinds of drift
are problems (issue 12, item 3):

- a vector without a ready row in its collection (its row was deleted, rolled back, belongs to a failed
  document, or is in another collection): retrieval already ignores it, since every hit is joined to
  its row in SQL by collection and status, but it wastes space and is the raw material of a leak if
  that filter is ever lost. ``--repair`` removes it.
- a ready row without a vector: that passage can only be found by keyword search. ``--repair`` embeds
  the row's text again with the service's embedder (the same input the pipeline embeds) and adds it:
  the honest repair, cheaper than re-ingesting the document, and it needs neither the original file
  nor a worker.

A segment file that the collection's manifest does not name, older than ``--garbage-age-s``, is left
by a write or compaction killed before its manifest line (ragsvc/index_store.py): it is never
searched, only wastes space, and ``--repair`` deletes it (workers sweep them too, after 10 minutes).

Vectors of documents still being ingested (``queued`` or ``processing``) belong to a running (or to be
retried) job: they are counted, and left to it. An index folder whose collection no longer exists (a
worker wrote to it while the collection was being deleted) is a problem too; ``--repair`` removes it.

Order matters, because workers write while this runs: the index is read before the rows (the pipeline
commits rows before it adds their vectors, so a vector read first has its row committed already), and
read again after them for the ready rows (a document made ready after the row read had its vectors
added before that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import Chunk, Collection, Document, DocumentStatus
from ragsvc.embedder import Embedder
from ragsvc.index_store import GARBAGE_AGE_S, IndexStore

IN_FLIGHT = (DocumentStatus.QUEUED, DocumentStatus.PROCESSING)
BATCH = 500  # ids per SQL IN list and texts per embedding call


@dataclass
class Report:
    collection: str  # the name; for a stray index folder, its folder name
    collection_id: str
    vectors: int = 0
    ready_chunks: int = 0
    orphans: list[int] = field(default_factory=list)  # vectors without a ready row in this collection
    missing: list[int] = field(default_factory=list)  # ready rows without a vector
    pending: int = 0  # vectors of documents still being ingested
    stray: bool = False  # an index folder whose collection no longer exists
    garbage: list[str] = field(default_factory=list)  # segment files no manifest names (a killed write)
    removed: int = 0
    added: int = 0

    @property
    def problems(self) -> int:
        return len(self.orphans) + len(self.missing) + int(self.stray) + len(self.garbage)

    def as_dict(self) -> dict:
        return {"collection": self.collection, "collection_id": self.collection_id, "vectors": self.vectors,
                "ready_chunks": self.ready_chunks, "vectors_without_ready_row": self.orphans,
                "ready_rows_without_vector": self.missing, "vectors_in_flight": self.pending,
                "stray_index_folder": self.stray, "segment_files_not_in_manifest": self.garbage, "removed": self.removed, "added": self.added}

    def describe(self) -> str:
        if self.stray:
            head = f"index folder {self.collection_id}: its collection no longer exists ({self.vectors} vectors)"
        else:
            head = f"collection {self.collection!r}: {self.vectors} vectors, {self.ready_chunks} ready chunks"
        parts = [] if self.problems else ["ok"]
        if self.orphans:
            parts.append(f"{len(self.orphans)} vector(s) without a ready row (ids {_sample(self.orphans)})")
        if self.missing:
            parts.append(f"{len(self.missing)} ready chunk(s) without a vector (ids {_sample(self.missing)})")
        if self.garbage:
            parts.append(f"{len(self.garbage)} segment file(s) not in the manifest (left by a killed write)")
        if self.pending:
            parts.append(f"{self.pending} vector(s) of documents still being ingested, left to their worker")
        if self.removed or self.added:
            parts.append(f"repaired: removed {self.removed} vector(s), re-embedded and added {self.added}")
        return f"{head}: {'; '.join(parts)}" if parts else head


def _sample(ids: list[int], n: int = 10) -> str:
    return ", ".join(map(str, ids[:n])) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def check_collection(sessions: sessionmaker[Session], store: IndexStore, collection_id: str,
                     name: str, garbage_age_s: float = GARBAGE_AGE_S) -> Report:
    in_index = store.stored_ids(collection_id)  # first: see the module docstring
    with sessions() as session:
        rows = session.execute(
            select(Chunk.id, Document.status).join(Document, Document.id == Chunk.document_id)
            .where(Document.collection_id == collection_id)
        ).all()
    ready = np.fromiter((cid for cid, st in rows if st == DocumentStatus.READY), dtype=np.int64)
    in_flight = np.fromiter((cid for cid, st in rows if st in IN_FLIGHT), dtype=np.int64)
    after = store.stored_ids(collection_id)
    not_ready = np.setdiff1d(in_index, ready)
    return Report(
        name, collection_id, vectors=len(after), ready_chunks=len(ready),
        orphans=np.setdiff1d(not_ready, in_flight).tolist(),
        pending=len(np.intersect1d(not_ready, in_flight)),
        missing=np.setdiff1d(ready, after).tolist(),
        garbage=[p.name for p in store.garbage(collection_id, garbage_age_s)],
    )


def collection_exists(sessions: sessionmaker[Session], name: str) -> bool:
    with sessions() as session:
        return session.scalar(select(Collection.id).where(Collection.name == name)) is not None


def check(sessions: sessionmaker[Session], store: IndexStore, collection: str | None = None,
          garbage_age_s: float = GARBAGE_AGE_S) -> list[Report]:
    """One report per collection (or only the named one), then one per stray index folder."""
    on_disk = store.collections_on_disk()  # before the collections: a folder only follows its row
    with sessions() as session:
        q = select(Collection.id, Collection.name).order_by(Collection.name)
        if collection is not None:
            q = q.where(Collection.name == collection)
        colls = session.execute(q).all()
        known = set(session.scalars(select(Collection.id)))
    reports = [check_collection(sessions, store, cid, name, garbage_age_s) for cid, name in colls]
    if collection is None:
        for folder in on_disk:
            if folder not in known:
                reports.append(Report(folder, folder, vectors=len(store.stored_ids(folder)), stray=True))
    return reports


def repair(sessions: sessionmaker[Session], store: IndexStore, embedder: Embedder, report: Report) -> None:
    """Remove the report's orphan vectors (or its stray folder); embed and add its ready rows' vectors."""
    if report.stray:
        store.drop(report.collection_id)
        report.removed = report.vectors
        return
    report.removed = store.remove(report.collection_id, report.orphans)
    for name in report.garbage:  # found old enough by the check: no write in progress names them
        (store.root / report.collection_id / name).unlink(missing_ok=True)
    for start in range(0, len(report.missing), BATCH):
        report.added += _re_embed(sessions, store, embedder, report.collection_id,
                                  report.missing[start:start + BATCH])


def _re_embed(sessions: sessionmaker[Session], store: IndexStore, embedder: Embedder, collection_id: str,
              ids: list[int]) -> int:
    from ingest.chunker import Chunk as Piece

    def ready_rows():
        with sessions() as session:
            return session.execute(
                select(Chunk.id, Chunk.heading_path, Chunk.text).join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_(ids), Document.collection_id == collection_id,
                       Document.status == DocumentStatus.READY)
            ).all()

    rows = ready_rows()
    if not rows:
        return 0
    # The very text the pipeline embedded for this chunk (heading path in front when it adds context).
    texts = [Piece(text, heading, None, 0, 0).embedding_input() for _, heading, text in rows]
    store.add(collection_id, [r.id for r in rows], embedder.embed(texts))
    # A row deleted while it was embedded: its delete may have removed the vector before it was added.
    gone = sorted({r.id for r in rows} - {r.id for r in ready_rows()})
    store.remove(collection_id, gone)
    return len(rows) - len(gone)
