"""SQLAlchemy 2 models: the source of truth. FAISS only holds vectors keyed by ``Chunk.id``.

This package imports nothing else from ``ragsvc`` so migrations and tools can load it alone.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (BigInteger, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


# SQLite only auto-increments an INTEGER PRIMARY KEY; BigInteger elsewhere keeps ids 64-bit like FAISS's.
ChunkId = BigInteger().with_variant(Integer(), "sqlite")
# Without AUTOINCREMENT SQLite hands out max(rowid)+1, so deleting the newest rows frees their ids for the
# next insert. A chunk id is also a FAISS key and a job id is shown to users: an id once handed out must
# never name something else (an orphan vector would then return another document's text). PostgreSQL's
# sequences never go back, so this only changes SQLite (issue 12, item 3).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    pass


class DocumentStatus:
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    documents: Mapped[list[Document]] = relationship(back_populates="collection", passive_deletes=True)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_collection_sha", "collection_id", "sha256"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16))  # pdf, text, markdown
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.QUEUED, index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    pages: Mapped[int | None] = mapped_column(Integer, default=None)
    chunks: Mapped[int | None] = mapped_column(Integer, default=None)
    glued_word_ratio: Mapped[float | None] = mapped_column(Float, default=None)
    # Live progress while a worker has it: parsing, chunking, embedding, indexing; fraction 0..1.
    stage: Mapped[str | None] = mapped_column(String(16), default=None)
    progress: Mapped[float | None] = mapped_column(Float, default=None)
    # A new version of another document; that one is removed when this one is ready.
    replaces_id: Mapped[str | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL"), default=None, index=True)
    reused_chunks: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    collection: Mapped[Collection] = relationship(back_populates="documents")


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (UniqueConstraint("document_id", "ordinal"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(ChunkId, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    heading_path: Mapped[str] = mapped_column(Text, default="")
    page_start: Mapped[int | None] = mapped_column(Integer, default=None)
    page_end: Mapped[int | None] = mapped_column(Integer, default=None)
    page_label: Mapped[str | None] = mapped_column(String(32), default=None)  # the printed number
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    # sha256 of the embedded text: an unchanged chunk of a new version reuses its vector.
    content_hash: Mapped[str] = mapped_column(String(64), default="", index=True)
    # The chunk's vector, float32 bytes (1,536 for 384-d): the source of truth that `ragsvc index
    # rebuild` recreates the FAISS segments from. Deferred: only code that asks for it loads it.
    # NULL for rows written before revision 0007 until a rebuild copies it from the index.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, default=None, deferred=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(ChunkId, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)  # of the upload, for the logs
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class AttemptOutcome:
    DONE = "done"  # the document was ingested (ready)
    FAILED = "failed"  # the document failed with a reason the user sees
    LOST = "lost"  # another worker re-claimed the job after this attempt's lease expired
    ABANDONED = "abandoned"  # the worker noticed it no longer held the lease and stopped
    REQUEUED = "requeued"  # the database went away; the job was put back without counting the attempt


class JobAttempt(Base):
    """One claim of a job by one worker, from claim to its end: the queue's history.

    Written when a worker claims a job and when the attempt ends; an attempt whose worker died is
    closed (``lost``) by the worker that claims the job next. ``attempt`` is the job's ``attempts`` at
    the claim, the fencing token the worker holds; a requeued attempt does not count, so its number
    is used again by the next claim.
    """

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(ChunkId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)  # None while it runs
    error: Mapped[str | None] = mapped_column(Text, default=None)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored (keys are 256-bit random, so a slow hash adds nothing).

    ``collection`` is the collection *name* the key is for (a key outlives a deleted and recreated
    collection of the same name); NULL means every collection.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public part of the key, for lookup
    key_hash: Mapped[str] = mapped_column(String(64))
    collection: Mapped[str | None] = mapped_column(String(128), default=None)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class WebSession(Base):
    """A web page sign-in. The cookie holds a random token; only its SHA-256 is stored (as the id), so a
    copy of the database signs no one in. Signing out sets ``revoked_at``: the old cookie then gets 401."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's token
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class RateLimitWindow(Base):
    """One rate-limit counter: requests of one API key in one bucket (ask, upload, delete) in the current
    fixed window. Shared by every API replica on the database (RAGSVC_RATE_LIMIT_STORE=database); one
    row per key and bucket, reused window after window, so the table stays as small as the key list."""

    __tablename__ = "rate_limit_windows"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    reset_at: Mapped[int] = mapped_column(BigInteger)  # unix seconds at which this window ends
    hits: Mapped[int] = mapped_column(Integer)


# Keyword search entries (migrations/versions/0008_keyword_fulltext.py, ragsvc/keyword_index.py) have no
# model: SQLite's is an FTS5 virtual table (with shadow tables keyword_fts_data, _idx, ...) and PostgreSQL's
# a tsvector table, each on one database only. Alembic's comparison with the models skips them by name.
KEYWORD_TABLE_PREFIXES = ("keyword_fts", "keyword_entries")


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:  # noqa: ARG001
    """Alembic ``include_name`` hook: everything but the keyword search tables (and their indexes)."""
    return not (name or "").startswith(KEYWORD_TABLE_PREFIXES + ("ix_keyword_entries",))
