"""The one order in which transactions lock job and document rows, so that none of them deadlock."""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from ragsvc.db.models import Document, Job


def lock_jobs_then_documents(session: Session, which: ColumnElement[bool]) -> list[str]:
    """Lock the job rows of the documents ``which`` selects, then the documents, each in id order.

    A worker's every write for a job runs in a transaction that locks its job row first (the lease
    check, ingest/lease.py) and its document row after. A delete that locked the document first and
    reached the job through ON DELETE CASCADE would take the same two rows the other way round, and
    PostgreSQL would abort one side as a deadlock (the DELETE answered 500). In this order the delete
    waits for the worker's transaction to end instead. SQLite has one writer at a time and ignores
    FOR UPDATE. Returns the documents' ids."""
    session.execute(select(Job.id).join(Document, Job.document_id == Document.id).where(which)
                    .order_by(Job.id).with_for_update(of=Job))
    return list(session.scalars(select(Document.id).where(which).order_by(Document.id).with_for_update()))
