"""Database layer: models, engine/session factory and migrations."""

from ragsvc.db.models import Base, Chunk, Collection, Document, DocumentStatus, Job, JobStatus

__all__ = ["Base", "Chunk", "Collection", "Document", "DocumentStatus", "Job", "JobStatus"]
