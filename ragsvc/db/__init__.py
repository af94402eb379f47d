"""Database layer: models, engine/session factory and migrations."""

from ragsvc.db.models import ApiKey, Base, Chunk, Collection, Document, DocumentStatus, Job, JobStatus

__all__ = ["ApiKey", "Base", "Chunk", "Collection", "Document", "DocumentStatus", "Job", "JobStatus"]
