"""Documents, collections and the job queue as the API sees them: store uploads, queue ingestion,
list, get, replace, delete."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import Chunk, Collection, Document, DocumentStatus, Job, JobAttempt
from ragsvc.db.locks import lock_jobs_then_documents
from ragsvc.errors import Conflict, InvalidInput, NotFound
from ragsvc.filetypes import detect_kind
from ragsvc.index_store import IndexStore
from ragsvc.observability import request_id
from ragsvc.paths import normalise_path
from ragsvc.settings import Settings
from ragsvc.storage import write_atomic

log = logging.getLogger(__name__)
DEFAULT_COLLECTION = "default"


@dataclass
class Upload:
    filename: str  # the path as the client sent it (``guide/README.md``), normalised by create()
    data: bytes


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite hands datetimes back naive; they were stored in UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat()


def document_json(doc: Document, collection_name: str, **extra: object) -> dict:
    return {
        # ``path`` is the document's identity in its collection; ``filename`` is the same text, kept for
        # clients written before paths (citations and the web page show it).
        "id": doc.id, "collection": collection_name, "filename": doc.filename, "path": doc.filename,
        "kind": doc.kind,
        "size_bytes": doc.size_bytes, "sha256": doc.sha256, "status": doc.status, "error": doc.error,
        "stage": doc.stage, "progress": doc.progress, "pages": doc.pages, "chunks": doc.chunks,
        "glued_word_ratio": doc.glued_word_ratio, "replaces": doc.replaces_id,
        "reused_chunks": doc.reused_chunks, "created_at": _iso(doc.created_at),
        "updated_at": _iso(doc.updated_at), **extra,
    }


def validate_collection_name(name: str | None) -> str:
    name = (name or DEFAULT_COLLECTION).strip()
    if not name or len(name) > 128 or any(c in name for c in "/\\\x00"):
        raise InvalidInput("A collection name has 1 to 128 characters and no slashes.")
    return name


class DocumentService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: IndexStore) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.files_dir = settings.files_dir.resolve()

    # --- collections -------------------------------------------------------------------------
    def _collection(self, session: Session, name: str, create: bool) -> Collection:
        coll = session.scalar(select(Collection).where(Collection.name == name))
        if coll is None and create:
            coll = Collection(name=name)
            try:
                with session.begin_nested():
                    session.add(coll)
            except IntegrityError:  # another request created it first
                coll = session.scalar(select(Collection).where(Collection.name == name))
        if coll is None:
            raise NotFound(f"There is no collection named {name!r}.")
        return coll

    def create_collection(self, name: str) -> dict:
        name = validate_collection_name(name)
        with self.sessions() as session:
            if session.scalar(select(Collection).where(Collection.name == name)) is not None:
                raise Conflict(f"A collection named {name!r} already exists.")
            coll = Collection(name=name)
            session.add(coll)
            session.commit()
            return {"name": coll.name, "documents": 0, "created_at": _iso(coll.created_at)}

    def collections(self) -> list[dict]:
        with self.sessions() as session:
            rows = session.execute(
                select(Collection, func.count(Document.id))
                .outerjoin(Document).group_by(Collection.id).order_by(Collection.name)
            ).all()
            return [{"name": c.name, "documents": n, "created_at": _iso(c.created_at)} for c, n in rows]

    def get_collection(self, name: str) -> dict:
        for c in self.collections():
            if c["name"] == name:
                return c
        raise NotFound(f"There is no collection named {name!r}.")

    def delete_collection(self, name: str) -> None:
        """Rows (documents, chunks, jobs cascade), then the index folder and the stored files."""
        with self.sessions() as session:
            coll = self._collection(session, name, create=False)
            # The collection row first: an upload's new document (its foreign key takes a share lock on
            # it) waits, so the set of documents locked next is the set the cascade deletes.
            session.scalar(select(Collection.id).where(Collection.id == coll.id).with_for_update())
            doc_ids = lock_jobs_then_documents(session, Document.collection_id == coll.id)
            coll_id = coll.id
            session.delete(coll)
            session.commit()
        # Keyword entries went with the chunk rows, in the same transaction (ragsvc/keyword_index.py).
        self.store.drop(coll_id)
        for doc_id in doc_ids:
            shutil.rmtree(self.files_dir / doc_id, ignore_errors=True)

    # --- documents ---------------------------------------------------------------------------
    def create(self, collection: str | None, uploads: list[Upload], replaces: str | None = None) -> list[dict]:
        """Validate every file first (so a bad one stores nothing), then store and queue them.

        A document's identity is its path in the collection (see ragsvc/paths.py). The same path with the
        same bytes: the existing document, ``duplicate: true``. The same path with other bytes (or
        ``replaces``): a new version that replaces the old one once it is ready (``replaces: <old id>``).
        Any other path is a new document, even with bytes the collection already holds elsewhere.
        """
        name = validate_collection_name(collection)
        if not uploads:
            raise InvalidInput("The request has no file; send one or more files in the multipart field 'files'.")
        if replaces and len(uploads) != 1:
            raise InvalidInput("'replaces' names one document, so send exactly one file with it.")
        kinds, paths, seen = [], [], set()
        for up in uploads:
            path = normalise_path(up.filename)
            if path in seen:
                # Both would be versions of one document and the first would vanish once the second is ready.
                raise InvalidInput(f"Two files in this request have the path {path!r}; a path names one "
                                   "document, so send one of them or give them different paths.")
            paths.append(path)
            seen.add(path)
            if not up.data:
                raise InvalidInput(f"{path!r} is empty (0 bytes); there is nothing to ingest.")
            kinds.append(detect_kind(path, up.data))
        out: list[dict | Document] = []
        written: list[Path] = []
        with self.sessions() as session:
            coll = self._collection(session, name, create=True)
            if replaces:
                target = session.get(Document, replaces)
                if target is None or target.collection_id != coll.id:
                    raise NotFound(f"There is no document {replaces!r} in collection {name!r} to replace.")
            try:
                for up, path, kind in zip(uploads, paths, kinds):
                    out.append(self._create_one(session, coll, path, up.data, kind, replaces, written))
                session.commit()
            except BaseException:
                session.rollback()
                for stored in written:  # nothing stored for a request that failed
                    shutil.rmtree(stored.parent, ignore_errors=True)
                raise
            return [d if isinstance(d, dict) else document_json(d, name, duplicate=False) for d in out]

    def _create_one(self, session: Session, coll: Collection, path: str, data: bytes, kind: str,
                    replaces: str | None, written: list[Path]) -> dict | Document:
        digest = hashlib.sha256(data).hexdigest()
        # The newest live (not failed) document at this path: unchanged bytes are a duplicate of it,
        # other bytes its new version.
        prev = session.scalar(
            select(Document).where(Document.collection_id == coll.id, Document.filename == path,
                                   Document.status != DocumentStatus.FAILED)
            .order_by(Document.created_at.desc()).limit(1)
        )
        if replaces and prev is not None and prev.id != replaces:
            raise Conflict(f"The path {path!r} is already document {prev.id!r}; replacing {replaces!r} with a "
                           "file at that path would leave two documents at one path. Delete that document "
                           "first, or upload under another path.")
        if prev is not None and prev.sha256 == digest:
            return document_json(prev, coll.name, duplicate=True)
        if not replaces and prev is not None:
            replaces = prev.id
        doc = Document(collection_id=coll.id, filename=path, kind=kind, size_bytes=len(data),
                       sha256=digest, storage_path="", replaces_id=replaces)
        session.add(doc)
        session.flush()
        # A generated name: the user's path never touches the disk. Whole file before the commit.
        stored = self.files_dir / doc.id / "original"
        written.append(stored)
        write_atomic(stored, data)
        doc.storage_path = str(stored)
        session.add(Job(document_id=doc.id, request_id=request_id.get()))
        return doc

    def get(self, document_id: str) -> dict:
        with self.sessions() as session:
            row = session.execute(
                select(Document, Collection.name).join(Collection).where(Document.id == document_id)
            ).first()
            if row is None:
                raise NotFound(f"There is no document with id {document_id!r}.")
            return document_json(row[0], row[1])

    def list(self, collection: str | None = None, status: str | None = None) -> list[dict]:
        with self.sessions() as session:
            q = select(Document, Collection.name).join(Collection).order_by(Document.created_at)
            if collection:
                q = q.where(Collection.name == collection)
            if status:
                q = q.where(Document.status == status)
            return [document_json(d, n) for d, n in session.execute(q).all()]

    def delete(self, document_id: str) -> None:
        """Rows first (search stops returning them at once), then vectors, then the stored file.

        The chunk ids come from the statement that deletes the chunk rows, inside the transaction that
        deletes the document: a list read before it could miss rows a worker commits meanwhile, and
        their vectors would stay behind. A worker whose vectors land after this removal finds the
        document gone when it tries to make it ready, and removes them itself (ingest/pipeline.py).
        """
        with self.sessions() as session:
            lock_jobs_then_documents(session, Document.id == document_id)
            doc = session.get(Document, document_id, with_for_update=True)
            if doc is None:
                raise NotFound(f"There is no document with id {document_id!r}.")
            collection_id = doc.collection_id
            chunk_ids = list(session.scalars(
                delete(Chunk).where(Chunk.document_id == document_id).returning(Chunk.id)))
            session.delete(doc)
            session.commit()
        # The chunks' keyword entries were removed by the same transaction (ragsvc/keyword_index.py).
        self.store.remove(collection_id, chunk_ids)
        shutil.rmtree(self.files_dir / document_id, ignore_errors=True)

    # --- jobs --------------------------------------------------------------------------------
    def jobs(self, status: str | None = None, limit: int = 200, collection: str | None = None) -> list[dict]:
        with self.sessions() as session:
            q = (select(Job, Document.filename, Document.stage, Document.progress, Collection.name)
                 .select_from(Job).join(Document, Job.document_id == Document.id)
                 .join(Collection, Document.collection_id == Collection.id).order_by(Job.id.desc()).limit(max(1, min(limit, 1000))))
            if status:
                q = q.where(Job.status == status)
            if collection:
                q = q.where(Collection.name == collection)
            rows = session.execute(q).all()
            history: dict[int, list[dict]] = {}
            if rows:
                for a in session.scalars(select(JobAttempt).where(JobAttempt.job_id.in_([r[0].id for r in rows]))
                                         .order_by(JobAttempt.id)):
                    history.setdefault(a.job_id, []).append(
                        {"attempt": a.attempt, "worker": a.worker, "started_at": _iso(a.started_at),
                         "ended_at": _iso(a.ended_at), "outcome": a.outcome, "error": a.error})
            return [
                {"id": j.id, "document_id": j.document_id, "collection": coll, "filename": fn, "status": j.status,
                 "stage": stage, "progress": progress, "attempts": j.attempts, "worker": j.lease_owner,
                 "lease_expires_at": _iso(j.lease_expires_at), "error": j.error,
                 "created_at": _iso(j.created_at), "updated_at": _iso(j.updated_at),
                 "history": history.get(j.id, [])}
                for j, fn, stage, progress, coll in rows
            ]
