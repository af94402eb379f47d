"""Documents and collections: store uploads, queue ingestion jobs, list, get, delete."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import Chunk, Collection, Document, DocumentStatus, Job
from ragsvc.errors import InvalidInput, NotFound
from ragsvc.filetypes import detect_kind
from ragsvc.index_store import IndexStore
from ragsvc.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_COLLECTION = "default"


@dataclass
class Upload:
    filename: str
    data: bytes


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite hands datetimes back naive; they were stored in UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat()


def document_json(doc: Document, collection_name: str, **extra: object) -> dict:
    return {
        "id": doc.id, "collection": collection_name, "filename": doc.filename, "kind": doc.kind,
        "size_bytes": doc.size_bytes, "sha256": doc.sha256, "status": doc.status, "error": doc.error,
        "pages": doc.pages, "chunks": doc.chunks, "glued_word_ratio": doc.glued_word_ratio,
        "created_at": _iso(doc.created_at), "updated_at": _iso(doc.updated_at), **extra,
    }


def validate_collection_name(name: str) -> str:
    name = (name or DEFAULT_COLLECTION).strip()
    if not name or len(name) > 128 or any(c in name for c in "/\\\x00"):
        raise InvalidInput("A collection name has 1 to 128 characters and no slashes.")
    return name


class DocumentService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: IndexStore) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store

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

    def create(self, collection: str, uploads: list[Upload]) -> list[dict]:
        """Validate every file first (so a bad one stores nothing), then store and queue them."""
        name = validate_collection_name(collection)
        if not uploads:
            raise InvalidInput("The request has no file; send one or more files in the multipart field 'files'.")
        kinds = []
        for up in uploads:
            if not up.data:
                raise InvalidInput(f"{up.filename!r} is empty (0 bytes); there is nothing to ingest.")
            kinds.append(detect_kind(up.filename, up.data))
        out = []
        with self.sessions() as session:
            coll = self._collection(session, name, create=True)
            for up, kind in zip(uploads, kinds):
                digest = hashlib.sha256(up.data).hexdigest()
                existing = session.scalar(
                    select(Document).where(Document.collection_id == coll.id, Document.sha256 == digest)
                    .order_by(Document.created_at).limit(1)
                )
                if existing is not None:
                    out.append(document_json(existing, name, duplicate=True))
                    continue
                doc = Document(collection_id=coll.id, filename=up.filename, kind=kind,
                               size_bytes=len(up.data), sha256=digest, storage_path="")
                session.add(doc)
                session.flush()
                folder = self.settings.files_dir / doc.id
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "original").write_bytes(up.data)
                doc.storage_path = str(folder / "original")
                session.add(Job(document_id=doc.id))
                out.append(doc)
            session.commit()
            return [d if isinstance(d, dict) else document_json(d, name, duplicate=False) for d in out]

    def get(self, document_id: str) -> dict:
        with self.sessions() as session:
            row = session.execute(
                select(Document, Collection.name).join(Collection).where(Document.id == document_id)
            ).first()
            if row is None:
                raise NotFound(f"There is no document with id {document_id!r}.")
            return document_json(row[0], row[1])

    def list(self, collection: str | None = None) -> list[dict]:
        with self.sessions() as session:
            q = select(Document, Collection.name).join(Collection).order_by(Document.created_at)
            if collection:
                q = q.where(Collection.name == collection)
            return [document_json(d, n) for d, n in session.execute(q).all()]

    def delete(self, document_id: str) -> None:
        """Rows first (search stops returning them at once), then vectors, then the stored file."""
        with self.sessions() as session:
            doc = session.get(Document, document_id)
            if doc is None:
                raise NotFound(f"There is no document with id {document_id!r}.")
            chunk_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
            collection_id, folder = doc.collection_id, self.settings.files_dir / doc.id
            session.delete(doc)
            session.commit()
        self.store.remove(collection_id, chunk_ids)
        shutil.rmtree(folder, ignore_errors=True)

    def collections(self) -> list[dict]:
        with self.sessions() as session:
            rows = session.execute(
                select(Collection, func.count(Document.id))
                .outerjoin(Document).group_by(Collection.id).order_by(Collection.name)
            ).all()
            return [{"name": c.name, "documents": n, "created_at": _iso(c.created_at)} for c, n in rows]
